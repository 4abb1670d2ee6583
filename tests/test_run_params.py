"""Run params are open to anyone allowed to trigger a run: none of them may switch checking off."""

from __future__ import annotations

import pytest

from tests.airflow_run import run_dag
from tests.pairs import Pair, pair
from tests.test_scan_compare import insert_cursor

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")

HUGE = 10**30


def test_a_start_id_past_the_source_end_fails_and_leaves_the_cursor(
    pair: Pair, capfd: pytest.CaptureFixture[str]
) -> None:
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 4)])
    pair.run()
    assert insert_cursor(pair)["cursor"] == 3

    for start_id in (HUGE, 5):
        result = run_dag(pair.dag_id, conf={"start_id": start_id})
        assert result.task_states[("scan_insert", -1)] == "failed" and result.tries[("scan_insert", -1)] == 1
        assert insert_cursor(pair)["cursor"] == 3
    output = "".join(capfd.readouterr())
    assert f"run param start_id={HUGE} is beyond the end of user, whose highest id is 3" in output
    assert "start_id may be at most 4" in output

    pair.add_source(("late", "x", None, None, None))  # id 4, missing at the destination
    pair.run()
    assert [b["byValue"] for b in pair.callbacks()] == ["late"]
    pair.run(conf={"start_id": 5})  # the table's end + 1: go on from there
    assert insert_cursor(pair)["cursor"] == 4


def test_a_huge_end_id_rechecks_up_to_the_source_end_and_never_moves_the_cursor(pair: Pair) -> None:
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 4)])
    pair.run()

    result = pair.run(conf={"start_id": 2, "end_id": HUGE})

    assert result.partitions == [{"version": 1, "kind": "ids", "after": 1, "upto": 3}]
    assert sorted(b["byValue"] for b in pair.callbacks()) == ["n2", "n3"]
    assert insert_cursor(pair)["cursor"] == 3
    pair.add_source(("late", "x", None, None, None))
    pair.run()
    assert [b["byValue"] for b in pair.callbacks()] == ["late"]
