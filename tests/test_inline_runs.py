"""A run with at most ``inlineRows`` rows to compare finishes in its scan task (real MariaDB, a
loopback receiver, ``dag.test()``): the same callbacks as the mapped path, and nothing lost when
the receiver fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from werkzeug import Response

from cupid_airflow.core.partitions import id_partition, rows_at_most, window_partition
from tests.pairs import Pair, pair
from tests.test_callback import Script
from tests.test_core import SortedColumn
from tests.test_scan_compare import insert_cursor

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")


def divergent(pair: Pair) -> None:
    """Five source rows: n1, n2 match, n3 differs, n4 and n5 are missing in the destination."""
    pair.add_source(*[(f"n{i}", f"name {i}", None, None, None) for i in range(1, 6)])
    pair.add_destination(("n1", "name 1", None, None, None), ("n2", "name 2", None, None, None),
                         ("n3", "garbled", None, None, None))  # fmt: skip


def test_a_small_run_compares_and_calls_back_in_its_scan_task(pair: Pair) -> None:
    # @continuous: each run's update window ends at its start, so the second run sees the edit
    pair.configure(
        inlineRows=1000,
        schedule="@continuous",
        src={"update": True, "updateColumn": "update_time", "updateScanSecond": 0},
    )
    divergent(pair)

    first = pair.run()

    assert {n: b["type"] for n, b in pair.by_number().items()} == {"n3": 2, "n4": 1, "n5": 1}
    assert first.output("scan") == [[]]  # nothing left for the mapped tasks
    assert first.task_states == {("scan", -1): "success", ("compare", -1): "skipped", ("callback", -1): "skipped"}
    assert insert_cursor(pair)["cursor"] == 5

    now = datetime.now(UTC).replace(tzinfo=None)
    pair.src.execute("UPDATE `user` SET name = 'renamed', update_time = %s WHERE number = 'n1'", (now,))
    second = pair.run()  # the update window reaches back to where the first run ended

    assert [(n, b["type"], b["srcColumn"]["name"]) for n, b in pair.by_number().items()] == [("n1", 2, "renamed")]
    assert second.task_states[("compare", -1)] == "skipped"
    assert insert_cursor(pair)["open"] == {}  # the first run's claim settled: its compare was skipped

    pair.run()
    assert pair.callbacks() == []  # nothing changed: nothing sent


def test_what_the_scan_cannot_deliver_goes_through_compare_to_callback_retries(pair: Pair) -> None:
    """The receiver refuses every event's first delivery: the scan's one pass delivers nothing,
    hands the three events on, and the callback task delivers each exactly once."""
    pair.configure(inlineRows=1000, failureJobRetrySecond=1)
    divergent(pair)
    script = Script(lambda attempt, _: Response("busy", 503) if attempt == 1 else Response("ok"))
    pair.answer_with(script)

    result = pair.run()

    carried: Any = result.output("scan")[0]
    assert [p["kind"] for p in carried] == ["events"] and len(carried[0]["events"]) == 3
    assert result.output("compare") == [carried[0]["events"]]  # passed through, not compared again
    assert result.task_states[("callback", 0)] == "success"
    assert set(script.seen.values()) == {2} and set(script.accepted.values()) == {1} and len(script.accepted) == 3

    pair.run()
    assert pair.callbacks() == [] and insert_cursor(pair)["open"] == {}  # settled, nothing sent twice


def test_with_a_callback_queue_the_scan_compares_but_leaves_sending_to_the_callback_task(pair: Pair) -> None:
    """The scan's workers (the source queue) may have no way to the receivers: callbackQueue's do."""
    pair.configure(inlineRows=1000, callbackQueue="cupid-callbacks")
    divergent(pair)
    script = Script(lambda attempt, _: Response("ok"))
    pair.answer_with(script)

    result = pair.run()

    carried: Any = result.output("scan")[0]
    assert [p["kind"] for p in carried] == ["events"] and len(carried[0]["events"]) == 3
    assert result.task_states[("callback", 0)] == "success"
    assert set(script.seen.values()) == {1} and len(script.accepted) == 3  # one POST each, all by callback


def test_a_run_over_inline_rows_uses_the_mapped_tasks(pair: Pair) -> None:
    pair.configure(inlineRows=4, chunkSize=3)
    divergent(pair)

    result = pair.run()

    assert [(p["after"], p["upto"]) for p in result.partitions] == [(0, 3), (3, 5)]
    assert {s for (t, _), s in result.task_states.items() if t in ("compare", "callback")} == {"success"}
    assert sorted(pair.by_number()) == ["n3", "n4", "n5"]


def test_a_gone_answer_in_the_scan_leaves_the_events_to_the_callback_task(pair: Pair) -> None:
    """410 in the inline pass is not final there: the callback task meets it again, fails for good
    and alerts, as on the mapped path."""
    pair.configure(inlineRows=1000)
    divergent(pair)
    pair.answer_with(lambda request: Response("gone", 410))

    from tests.airflow_run import run_dag

    result = run_dag(pair.dag_id)

    assert result.task_states[("scan", -1)] == "success" and result.task_states[("compare", 0)] == "success"
    assert result.task_states[("callback", 0)] == "failed" and result.tries[("callback", 0)] == 1
    bodies = [json.loads(r.get_data()) for r, _ in pair.receiver.log]
    assert len(bodies) == 6 and {b["byValue"] for b in bodies} == {"n3", "n4", "n5"}  # once each, twice in all


def test_rows_at_most_counts_id_ranges_by_width_and_probes_windows() -> None:
    column = SortedColumn([10, 20, 30, 40, 50])
    window = window_partition("t", "epoch_s", 10, 41)  # 10, 20, 30, 40
    assert rows_at_most(column, [window], 4) and not rows_at_most(column, [window], 3)
    assert rows_at_most(column, [id_partition(0, 6), window], 10)
    assert not rows_at_most(column, [id_partition(0, 35), window], 5)  # 3 + 4 rows
    # wider than the limit, sparse: probed, not counted by width (10, 20, 30, 40, 50 are five rows)
    assert rows_at_most(column, [id_partition(0, 60)], 5) and not rows_at_most(column, [id_partition(0, 60)], 4)
    assert rows_at_most(column, [id_partition(0, 35)], 3) and not rows_at_most(column, [id_partition(0, 35)], 2)
    # the width uses the whole budget: probed instead (the window holds 10, 20, 30, 40; the ids 10, 20)
    assert rows_at_most(column, [id_partition(0, 20), window], 20)
    assert rows_at_most(column, [window, window], 8) and not rows_at_most(column, [window, window], 7)


def test_a_slow_receiver_does_not_hold_the_scan_task_past_its_sending_time(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan starts deliveries for a bounded time only: what it has not sent by then goes on to
    the callback task. Without the bound a slow or throttling receiver kept the scan (and its
    database pool slot) sending up to its 2-hour time limit, whose retries compared and sent
    everything again, so the events never reached the callback task's resumable retries."""
    import time

    from cupid_airflow import callbacks

    monkeypatch.setattr(callbacks, "INLINE_SEND_SECONDS", 0.8)
    pair.configure(inlineRows=1000, workerNumber=1)
    divergent(pair)

    def slow(attempt: int, request: Any) -> Response:
        time.sleep(0.5)
        return Response("ok")

    script = Script(slow)
    pair.answer_with(script)

    result = pair.run()

    carried: Any = result.output("scan")[0]
    assert [p["kind"] for p in carried] == ["events"] and 1 <= len(carried[0]["events"]) < 3
    assert result.task_states[("callback", 0)] == "success"
    assert len(script.accepted) == 3 and set(script.seen.values()) == {1}  # each sent once, by one task


def test_a_broken_callback_setup_leaves_the_events_to_the_callback_task(pair: Pair) -> None:
    """A callback connection the scan cannot use does not fail the scan (its ranges were compared):
    the callback task meets the same error and fails with the alert, holding every event."""
    pair.configure(inlineRows=1000, callbackRetries=0)
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["httpConnId"] = "cupid_no_such_connection"
    config["des"][0]["callbackNotification"] = {"url": "/cb"}
    pair.config_path.write_text(json.dumps(config))
    divergent(pair)

    from tests.airflow_run import run_dag

    result = run_dag(pair.dag_id)

    assert result.task_states[("scan", -1)] == "success" and result.task_states[("callback", 0)] == "failed"
    carried: Any = result.output("scan")[0]
    assert sorted(e["byValue"] for e in carried[0]["events"]) == ["n3", "n4", "n5"]
