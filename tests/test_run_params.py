"""Run params are open to anyone allowed to trigger a run: none of them may switch checking off."""

from __future__ import annotations

import pytest

from tests.airflow_run import run_dag
from tests.pairs import Pair, pair
from tests.test_scan_compare import insert_cursor

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")

HUGE = 10**30


def test_a_start_id_cannot_move_the_cursor_forward(pair: Pair, capfd: pytest.CaptureFixture[str]) -> None:
    """Past the source's end (10^30), or just to its end + 1 while unchecked rows wait below it:
    either would skip rows. The run fails, the cursor stays, the waiting row is still reported."""
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 4)])
    pair.run()
    assert insert_cursor(pair)["cursor"] == 3
    pair.add_source(("waiting", "x", None, None, None))  # id 4, missing at the destination, not yet claimed

    for start_id in (HUGE, 5):  # 5: the table's end + 1 would skip id 4
        result = run_dag(pair.dag_id, conf={"start_id": start_id})
        assert result.task_states[("scan_insert", -1)] == "failed" and result.tries[("scan_insert", -1)] == 1
        assert insert_cursor(pair)["cursor"] == 3
    output = "".join(capfd.readouterr())
    assert f"run param start_id={HUGE} would skip ids nobody checked: the insert cursor is at 3" in output
    assert "start_id may be at most 4" in output

    pair.run(conf={"start_id": 4})  # where the cursor stands: allowed, skips nothing
    assert [b["byValue"] for b in pair.callbacks()] == ["waiting"]
    pair.run(conf={"start_id": 2})  # back: re-checks
    assert insert_cursor(pair)["cursor"] == 4


def test_the_limit_of_start_id() -> None:
    from cupid_airflow.core.claims import start_id_limit

    assert start_id_limit(cursor=3, first_cursor=0, max_id=10) == 4  # forward skips nothing beyond the cursor
    assert start_id_limit(cursor=None, first_cursor=99, max_id=500) == 100  # before the first run: src.startId
    assert start_id_limit(cursor=5000, first_cursor=0, max_id=3000) == 3001  # AUTO_INCREMENT reset: the end + 1
    assert start_id_limit(cursor=None, first_cursor=0, max_id=None) == 1  # an empty table


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
