"""Scan and compare on real MariaDB, through the factory's DAGs run by real Airflow (``dag.test()``).

A config file in, callbacks on a real HTTP server and Airflow state out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from airflow.models.variable import Variable

from tests.airflow_run import run_dag
from tests.conftest import MySqlDatabase
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")


def insert_cursor(pair: Pair) -> dict[str, Any]:
    return Variable.get(f"cupid.{pair.dag_id}.insert_cursor", deserialize_json=True)


BIG_TEXT = "长文本 " * 40_000  # 280,000 characters


def test_missing_and_different_rows_become_one_callback_each(pair: Pair) -> None:
    born = datetime(2024, 5, 6, 7, 8, 9)
    pair.add_source(
        ("same", "Alice", Decimal("10.50"), born, BIG_TEXT),
        ("missing", "Bob", Decimal("1.00"), None, None),
        ("renamed", "Carol", Decimal("2.00"), None, None),
        ("null_vs_empty", None, None, None, None),
        ("zero_vs_null", "z", Decimal("0.00"), None, None),
        ("case", "dave", None, None, None),
        ("emoji", "😀 表情", Decimal("3.00"), born, None),
        ("emoji_diff", "😀", None, None, None),
        ("long_text", "x", None, None, BIG_TEXT + "!"),
        ("two_cols", "Eve", Decimal("4.00"), born, None),
        ("fraction", "f", None, datetime(2024, 1, 1, 12, 0, 0, 500000), None),
    )
    pair.add_destination(
        ("same", "Alice", "10.5", born, BIG_TEXT),  # DECIMAL 10.50 vs text '10.5', DATETIME(6) vs DATETIME: equal
        ("renamed", "Caroline", "2.00", None, None),
        ("null_vs_empty", "", None, None, None),
        ("zero_vs_null", "z", None, None, None),
        ("case", "Dave", None, None, None),
        ("emoji", "😀 表情", "3", born, None),
        ("emoji_diff", "😁", None, None, None),
        ("long_text", "x", None, None, BIG_TEXT),
        ("two_cols", "Eva", "4.01", born, None),
        ("fraction", "f", None, datetime(2024, 1, 1, 12, 0, 0), None),
    )

    pair.run()
    got = pair.by_number()

    assert set(got) == {
        "missing", "renamed", "null_vs_empty", "zero_vs_null", "case",
        "emoji_diff", "long_text", "two_cols", "fraction",
    }  # fmt: skip
    assert got["missing"]["type"] == 1 and "diffColumns" not in got["missing"]
    assert got["missing"]["srcColumn"] == {
        "id": "2", "number": "missing", "name": "Bob", "amount": "1.00", "born": None, "bio": None,
    }  # fmt: skip
    assert {n: (b["type"], b["diffColumns"]) for n, b in got.items() if n != "missing"} == {
        "renamed": (2, ["name"]),
        "null_vs_empty": (2, ["name"]),
        "zero_vs_null": (2, ["amount"]),
        "case": (2, ["name"]),
        "emoji_diff": (2, ["name"]),
        "long_text": (2, ["bio"]),
        "two_cols": (2, ["name", "amount"]),
        "fraction": (2, ["born"]),
    }
    assert got["emoji_diff"]["srcColumn"]["name"] == "😀" and got["emoji_diff"]["desColumn"]["name"] == "😁"
    assert got["fraction"]["srcColumn"]["born"] == "2024-01-01 12:00:00.500000"
    assert got["null_vs_empty"]["srcColumn"]["name"] is None and got["null_vs_empty"]["desColumn"]["name"] == ""
    for body in got.values():
        assert all(v is None or isinstance(v, str) for v in body["srcColumn"].values())
        assert body["desTable"] == "user" and body["byValue"] == body["srcColumn"]["number"]


def test_identical_tables_call_back_nothing(pair: Pair) -> None:
    rows = [(f"n{i}", f"name {i}", Decimal(i), None, None) for i in range(50)]
    pair.add_source(*rows)
    pair.add_destination(*[(n, name, str(a), b, t) for n, name, a, b, t in rows])
    result = pair.run()
    assert pair.callbacks() == []
    assert result.events == []


def test_two_destinations_with_different_column_maps(pair: Pair, mysql_db: Callable[[str], MySqlDatabase]) -> None:
    cache = mysql_db("cache")
    cache.execute("CREATE TABLE summary (no VARCHAR(32) PRIMARY KEY, total DECIMAL(12,2), nick VARCHAR(255))")
    config = json.loads(pair.config_path.read_text())
    config["des"].append(
        {
            "dsn": cache.dsn,
            "table": "summary",
            "columns": {"number": "no", "amount": "total"},
            "byColumn": "no",
            "callbackNotification": {"url": pair.receiver.url_for("/cb")},
            "dagId": f"{pair.dag_id}_cache",
        }
    )
    pair.config_path.write_text(json.dumps(config))
    pair.add_source(("a", "Ann", Decimal("1.00"), None, None), ("b", "Ben", Decimal("2.00"), None, None))
    pair.add_destination(("a", "Ann", "1.00", None, None), ("b", "Benjamin", "2.00", None, None))
    cache.executemany(
        "INSERT INTO summary VALUES (%s, %s, %s)", [("a", Decimal("9.99"), "x"), ("b", Decimal("2"), "y")]
    )

    replica = run_dag(f"{pair.dag_id}_1")
    cached = run_dag(f"{pair.dag_id}_cache")

    assert [(e["byValue"], e["diffColumns"]) for e in replica.events] == [("b", ["name"])]
    assert [(e["byValue"], e["diffColumns"], e["desTable"]) for e in cached.events] == [("a", ["total"], "summary")]
    assert cached.events[0]["srcColumn"] == {"id": "1", "number": "a", "amount": "1.00"}
    assert cached.events[0]["desColumn"] == {"no": "a", "total": "9.99"}


def test_id_gaps_of_millions_cost_nothing(pair: Pair) -> None:
    pair.configure(chunkSize=2)
    for row_id in (1, 2, 3_000_000, 7_000_000, 9_999_999):
        pair.src.execute("INSERT INTO `user` (id, number, name) VALUES (%s, %s, %s)", (row_id, f"n{row_id}", "x"))
    result = pair.run()
    assert result.partitions == [
        {"version": 1, "kind": "ids", "after": 0, "upto": 2},
        {"version": 1, "kind": "ids", "after": 2, "upto": 7_000_000},
        {"version": 1, "kind": "ids", "after": 7_000_000, "upto": 9_999_999},
    ]
    assert sorted(int(b["srcColumn"]["id"]) for b in pair.callbacks()) == [1, 2, 3_000_000, 7_000_000, 9_999_999]


def test_cursor_advances_and_only_new_ids_are_checked(pair: Pair) -> None:
    pair.add_source(("a", "1", None, None, None), ("b", "2", None, None, None))
    first = pair.run()
    assert insert_cursor(pair)["cursor"] == 2 and len(pair.callbacks()) == 2

    pair.add_source(("c", "3", None, None, None))
    second = pair.run()
    assert [b["byValue"] for b in pair.callbacks()] == ["c"]
    assert second.partitions == [{"version": 1, "kind": "ids", "after": 2, "upto": 3}]

    third = pair.run()
    assert third.partitions == [] and pair.callbacks() == []
    assert third.task_states[("compare", -1)] == "skipped"
    assert insert_cursor(pair)["claims"] == {first.run_id: [0, 2], second.run_id: [2, 3]}  # none for the idle run
    assert insert_cursor(pair)["open"] == {}


def test_an_idle_run_leaves_the_insert_cursor_as_it_was(pair: Pair) -> None:
    """Nothing new, nothing open: the Variable is not rewritten (each write is an Execution API call)."""
    pair.add_source(("a", "1", None, None, None))
    pair.run()
    pair.run()  # settles the first run's claim
    before = Variable.get(f"cupid.{pair.dag_id}.insert_cursor")

    pair.run()

    assert Variable.get(f"cupid.{pair.dag_id}.insert_cursor") == before


def test_a_runs_state_is_asked_for_only_when_its_compares_did_not_all_succeed() -> None:
    from types import SimpleNamespace

    from cupid_airflow.operators.scan import ScanInsertOperator

    asked: list[str] = []

    def run_state(dag_id: str, run_id: str) -> str:
        asked.append(run_id)
        if run_id == "deleted":
            raise RuntimeError("not found")
        return {"failed_compare": "failed", "compares_running": "running"}[run_id]

    states = {
        "passed": {"compare_0": "success", "compare_1": "skipped"},
        "nothing_to_compare": {"compare": "skipped"},
        "failed_compare": {"compare_0": "success", "compare_1": "failed"},
        "compares_running": {"compare_0": "success", "compare_1": "running"},
        "deleted": {},
    }
    ti = SimpleNamespace(get_task_states=lambda **_: states, get_dagrun_state=run_state)
    op = ScanInsertOperator(task_id="scan_insert", config_file="unused.json")

    outcomes = op.compare_outcomes({"ti": ti}, [*states])  # type: ignore[typeddict-item]

    assert outcomes == {
        "passed": True,
        "nothing_to_compare": True,
        "failed_compare": False,
        "compares_running": None,
        "deleted": False,
    }
    assert asked == ["failed_compare", "compares_running", "deleted"]


def test_a_retried_run_gets_the_same_claim(pair: Pair) -> None:
    pair.add_source(("a", "1", None, None, None), ("b", "2", None, None, None))
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    first = pair.run(logical_date=when)
    pair.add_source(("c", "3", None, None, None))
    again = pair.run(logical_date=when)  # same run id: the scan runs again, as on a retry

    assert again.run_id == first.run_id
    assert again.partitions == first.partitions == [{"version": 1, "kind": "ids", "after": 0, "upto": 2}]
    assert insert_cursor(pair)["cursor"] == 2  # id 3 is left for the next run, not skipped
    assert sorted(b["byValue"] for b in pair.callbacks()) == ["a", "b"]
    pair.run()
    assert [b["byValue"] for b in pair.callbacks()] == ["c"]


def test_start_id_restarts_and_end_id_rechecks(pair: Pair) -> None:
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 11)])
    pair.run()
    assert insert_cursor(pair)["cursor"] == 10

    pair.run(conf={"start_id": 3, "end_id": 5})
    assert sorted(b["byValue"] for b in pair.callbacks()) == ["n3", "n4", "n5"]
    assert insert_cursor(pair)["cursor"] == 10  # a re-check leaves the cursor alone

    pair.run(conf={"start_id": 8})
    assert sorted(b["byValue"] for b in pair.callbacks()) == ["n10", "n8", "n9"]
    assert insert_cursor(pair)["cursor"] == 10


def test_first_run_starts_at_the_configured_start_id(pair: Pair) -> None:
    pair.configure(src={"startId": 4})
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 7)])
    pair.run()
    assert sorted(b["byValue"] for b in pair.callbacks()) == ["n4", "n5", "n6"]


def test_a_backlog_drains_over_several_runs(pair: Pair) -> None:
    pair.configure(maxRowsPerRun=4, chunkSize=2)
    pair.add_source(*[(f"n{i:02d}", "x", None, None, None) for i in range(1, 11)])
    seen: list[str] = []
    claims, runs = [], []
    for _ in range(3):
        result = pair.run()
        runs.append(result.run_id)
        claims.append([(p["after"], p["upto"]) for p in result.partitions])
        seen += [b["byValue"] for b in pair.callbacks()]
        if len(runs) == 1:  # what the grid shows instead of "compare 0", "callback 1"
            assert {k: v for k, v in result.labels.items() if k[0] != "scan"} == {
                ("compare", 0): "ids 1..2: 2 found",
                ("compare", 1): "ids 3..4: 2 found",
                ("callback", 0): "2 events, 2 delivered",
                ("callback", 1): "2 events, 2 delivered",
            }
    assert claims == [[(0, 2), (2, 4)], [(4, 6), (6, 8)], [(8, 10)]]
    assert sorted(seen) == [f"n{i:02d}" for i in range(1, 11)]
    # A watched pair's scan that leaves ids behind queues the next run through the pair's watch
    # asset (the watcher fires only when the table changes); the run that drains it does not.
    assert [(e["run_id"], e["extra"]) for e in _watch_asset_events(pair.dag_id)] == [
        (runs[0], {"backlog_ids": 6}),
        (runs[1], {"backlog_ids": 2}),
    ]


def _watch_asset_events(dag_id: str) -> list[dict[str, Any]]:
    """Events of the pair's watch asset, oldest first, with the run of the task that emitted each."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.source_run_id, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == f"cupid-watch/{dag_id}")
            .order_by(AssetEvent.id)
        )
        return [{"run_id": run_id, "extra": extra} for run_id, extra in rows]


def test_a_run_that_rechecks_a_failed_runs_ranges_queues_no_next_run(pair: Pair) -> None:
    """A lasting failure must not chain failing runs back to back, each checking more than the last."""
    pair.configure(maxRowsPerRun=4, chunkSize=2)
    pair.add_source(*[(f"n{i:02d}", "x", None, None, None) for i in range(1, 11)])
    pair.des.execute("DROP TABLE `user`")  # every compare fails at once: no retry can fix it
    failed, again = run_dag(pair.dag_id), run_dag(pair.dag_id)
    assert (failed.state, again.state) == ("failed", "failed")
    assert [(p["after"], p["upto"]) for p in again.partitions] == [(0, 2), (2, 4), (4, 6), (6, 8)]  # took over
    events = [(e["run_id"], e["extra"]) for e in _watch_asset_events(pair.dag_id)]
    assert events == [(failed.run_id, {"backlog_ids": 6})]


def test_a_pair_that_is_not_watched_queues_no_run_for_its_backlog(pair: Pair) -> None:
    pair.configure(maxRowsPerRun=2, watch=False)
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 6)])
    result = pair.run()
    assert [(p["after"], p["upto"]) for p in result.partitions] == [(0, 2)]
    assert _watch_asset_events(pair.dag_id) == []  # its schedule's next run takes the rest


def test_hostile_values_are_data_not_sql(pair: Pair) -> None:
    hostile = ["'; DROP TABLE `user`; --", "back\\slash", 'quo"te', "\x00nul", "`tick`"]
    pair.add_source(*[(f"h{i}", v, None, None, v) for i, v in enumerate(hostile)])
    pair.add_destination(*[(f"h{i}", v, None, None, v + "?") for i, v in enumerate(hostile)])
    pair.add_destination(("'; DROP TABLE x; --", "x", None, None, None))

    pair.run()

    got = pair.by_number()
    assert sorted(got) == [f"h{i}" for i in range(len(hostile))]
    for i, value in enumerate(hostile):
        assert got[f"h{i}"]["srcColumn"]["name"] == value
        assert got[f"h{i}"]["desColumn"]["bio"] == value + "?"
        assert got[f"h{i}"]["diffColumns"] == ["bio"]
    assert pair.src.execute("SELECT COUNT(*) FROM `user`")[0][0] == len(hostile)
    assert pair.des.execute("SELECT COUNT(*) FROM `user`")[0][0] == len(hostile) + 1


# ---------------------------------------------------------------------------- update windows


@pytest.mark.parametrize("column_type", ["DATETIME", "VARCHAR(19)"])
def test_update_window_in_the_source_time_zone(pair: Pair, column_type: str) -> None:
    """Rows are stamped in Asia/Shanghai (UTC+8); the run's UTC interval is converted before querying."""
    pair.src.execute(f"ALTER TABLE `user` MODIFY update_time {column_type} NOT NULL")
    pair.configure(src={"insert": False, "update": True, "updateColumn": "update_time",
                        "updateTimeFormate": "Y-m-d H:i:s", "timezone": "Asia/Shanghai", "updateScanSecond": 0},
                   schedule=3600)  # fmt: skip
    # The run for 03:00-04:00 UTC covers 11:00-12:00 in Shanghai.
    pair.add_source(
        ("before", "x", None, None, None, "2026-03-01 10:59:59"),
        ("inside", "x", None, None, None, "2026-03-01 11:30:00"),
        ("edge", "x", None, None, None, "2026-03-01 11:00:00"),
        ("after", "x", None, None, None, "2026-03-01 12:00:00"),
        ("utc_trap", "x", None, None, None, "2026-03-01 03:30:00"),  # inside only if read as UTC
    )
    pair.run(logical_date=datetime(2026, 3, 1, 4, tzinfo=UTC))
    assert sorted(pair.by_number()) == ["edge", "inside"]


def test_backfilled_intervals_find_past_divergences_and_late_rows(pair: Pair) -> None:
    pair.configure(src={"insert": False, "update": True, "updateColumn": "update_time", "updateScanSecond": 30},
                   schedule=3600)  # fmt: skip
    pair.add_source(
        ("h1", "x", None, None, None, "2026-02-01 00:10:00"),
        ("h2", "x", None, None, None, "2026-02-01 01:20:00"),
        ("h3", "x", None, None, None, "2026-02-01 02:30:00"),
        ("late", "x", None, None, None, "2026-02-01 01:59:45"),  # committed late: seen by the 02:00-03:00 run too
        ("too_old", "x", None, None, None, "2026-01-31 23:00:00"),
    )
    found = []
    for hour in (1, 2, 3):
        pair.run(logical_date=datetime(2026, 2, 1, hour, tzinfo=UTC))
        found.append(sorted(pair.by_number()))
    assert found == [["h1"], ["h2", "late"], ["h3", "late"]]


def test_since_until_rechecks_an_arbitrary_window(pair: Pair) -> None:
    pair.configure(src={"update": True, "updateColumn": "update_time"})
    pair.add_source(
        ("old", "x", None, None, None, "2025-06-01 08:00:00"),
        ("older", "x", None, None, None, "2025-05-01 08:00:00"),
    )
    Variable.set(f"cupid.{pair.dag_id}.insert_cursor", json.dumps({"cursor": 2, "claims": {}}))
    pair.run(conf={"since": "2025-06-01T00:00:00Z", "until": "2025-06-02T00:00:00Z"})
    assert sorted(pair.by_number()) == ["old"]


def test_unsortable_string_format_is_a_clear_error(pair: Pair) -> None:
    pair.src.execute("ALTER TABLE `user` MODIFY update_time VARCHAR(19) NOT NULL")
    pair.configure(src={"insert": False, "update": True, "updateColumn": "update_time",
                        "updateTimeFormate": "2006-1-2 15:04:05"})  # fmt: skip
    pair.add_source(("a", "x", None, None, None, "2026-3-1 11:00:00"))
    result = run_dag(pair.dag_id)
    assert result.state == "failed"
    assert result.task_states[("scan", -1)] == "failed"


def test_a_failing_compare_stops_its_reader_threads_before_closing_their_connections(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source is read ahead in a thread: when the comparison fails, that thread must be gone
    before the connection it reads on is closed (the same for the destination lookup threads)."""
    import threading

    from cupid_airflow.core.compare import PairComparer
    from cupid_airflow.core.partitions import id_partition
    from cupid_airflow.hooks.table import Table
    from cupid_airflow.operators.compare import CompareOperator

    pair.add_source(*[(f"n{i:05d}", "x", None, None, None) for i in range(30_000)])  # six 5,000-row batches
    before = set(threading.enumerate())
    alive_at_close: list[list[str]] = []
    close = Table.close

    def recording_close(self: Table) -> None:
        alive_at_close.append([t.name for t in threading.enumerate() if t not in before and t.is_alive()])
        close(self)

    def failing_compare(self: PairComparer, src_rows: Any, des_rows: Any) -> Any:
        raise RuntimeError("the comparison failed")

    monkeypatch.setattr(Table, "close", recording_close)
    monkeypatch.setattr(PairComparer, "compare", failing_compare)
    task = CompareOperator(task_id="compare", config_file=str(pair.config_path), partition=id_partition(0, 30_000))
    with pytest.raises(RuntimeError, match="the comparison failed"):
        task.execute({})  # type: ignore[arg-type]
    assert len(alive_at_close) >= 2 and alive_at_close == [[]] * len(alive_at_close)


def test_update_window_partitions_share_no_row(pair: Pair) -> None:
    pair.configure(chunkSize=3, src={"insert": False, "update": True, "updateColumn": "update_time"}, schedule=3600)
    stamps = ["2026-04-01 00:00:01"] * 5 + [f"2026-04-01 00:{m:02d}:00" for m in range(10, 20)]
    pair.add_source(*[(f"n{i:02d}", "x", None, None, None, s) for i, s in enumerate(stamps)])
    result = pair.run(logical_date=datetime(2026, 4, 1, 1, tzinfo=UTC))
    numbers = [b["byValue"] for b in pair.callbacks()]
    assert sorted(numbers) == [f"n{i:02d}" for i in range(15)]  # every row once, none twice
    windows = [(p["since"]["datetime"], p["until"]["datetime"]) for p in result.partitions]
    assert windows[0] == ("2026-03-31T23:59:55", "2026-04-01T00:10:00")  # the 5 rows sharing a stamp stay together
    assert windows[1:] == [
        ("2026-04-01T00:10:00", "2026-04-01T00:13:00"),
        ("2026-04-01T00:13:00", "2026-04-01T00:16:00"),
        ("2026-04-01T00:16:00", "2026-04-01T00:19:00"),
        ("2026-04-01T00:19:00", "2026-04-01T01:00:00"),
    ]


def test_new_rows_in_the_update_window_are_reported_once(pair: Pair) -> None:
    # dag.test()'s run gets the interval that ended last: with watch off, the minute just gone
    pair.configure(watch=False, src={"update": True, "updateColumn": "update_time", "updateScanSecond": 3600})
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    pair.add_source(("fresh", "x", None, None, None, now - timedelta(seconds=5)))
    result = pair.run()
    assert [b["byValue"] for b in pair.callbacks()] == ["fresh"]
    assert result.partitions[-1]["exclude_ids"] == [0, 1]


def test_continuous_schedule_keeps_its_own_high_water_mark(pair: Pair) -> None:
    pair.configure(schedule="@continuous", src={"insert": False, "update": True, "updateColumn": "update_time"})
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    pair.add_source(("recent", "x", None, None, None, now - timedelta(seconds=20)))
    pair.add_source(("ancient", "x", None, None, None, now - timedelta(days=1)))
    pair.run()
    assert sorted(pair.by_number()) == ["recent"]
    saved = Variable.get(f"cupid.{pair.dag_id}.update_hwm", deserialize_json=True)
    assert saved["version"] == 1
    mark = datetime.fromisoformat(saved["until"])
    assert mark >= now.replace(tzinfo=UTC)

    # A row stamped after the mark (a run that was late, say) is found by the next run.
    pair.src.execute("UPDATE `user` SET update_time = %s WHERE number = 'ancient'", (mark.replace(tzinfo=None),))
    pair.run()
    assert sorted(pair.by_number()) == ["ancient"]


def test_backfill_runs_check_exactly_their_interval() -> None:
    from types import SimpleNamespace

    from cupid_airflow.planning import ScanRun
    from cupid_airflow.planning.updates import UpdatePlanner

    pair: Any = SimpleNamespace(config=SimpleNamespace(src=SimpleNamespace(update_scan_second=5)))
    planner = UpdatePlanner(pair, variables={}, log=None)  # type: ignore[arg-type]
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    run = ScanRun("backfill__1", {}, interval_start=start, interval_end=end, backfill=True)
    assert planner._window(run) == (start - timedelta(seconds=5), end, False)


def test_a_failed_run_loses_none_of_its_claimed_ids(pair: Pair) -> None:
    """Issue 14's sequence: scan_insert claims (0, 50] and moves the cursor, then scan_update fails
    (a wrong updateColumn). Once the config is fixed, the next run compares those 50 ids too."""
    pair.add_source(*[(f"n{i:02d}", f"name {i}", None, None, None) for i in range(1, 51)])
    pair.add_destination(*[(f"n{i:02d}", f"name {i}", None, None, None) for i in range(1, 51) if i % 7])
    pair.configure(src={"update": True, "updateColumn": "updated_at"})  # the column is update_time

    failed = run_dag(pair.dag_id)
    assert failed.state == "failed" and failed.task_states[("scan", -1)] == "failed"
    assert failed.tries[("scan", -1)] == 1  # an unknown column: no retry can fix it
    assert insert_cursor(pair)["cursor"] == 50 and pair.callbacks() == []

    pair.configure(src={"updateColumn": "update_time"})
    second = pair.run()
    assert sorted(pair.by_number()) == [f"n{i:02d}" for i in range(7, 51, 7)]  # the failed run's divergences
    assert (0, 50) in [(p["after"], p["upto"]) for p in second.partitions]

    third = pair.run()  # the second run's compares all succeeded: nothing is open any more
    assert pair.callbacks() == [] and insert_cursor(pair)["open"] == {}
    assert third.partitions == []


def test_a_compare_failing_on_one_partition_hands_its_claim_to_the_next_run(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three partitions; one fails for good (a permanent database error), two succeed. The run is
    red and delivers nothing (the mapped callback waits for every compare), and the next run checks
    the claim again: every divergence of it is reported."""
    import MySQLdb

    from cupid_airflow.pair import SyncPair

    pair.configure(chunkSize=10)
    pair.add_source(*[(f"n{i:02d}", f"name {i}", None, None, None) for i in range(1, 31)])
    pair.add_destination(*[(f"n{i:02d}", f"name {i}", None, None, None) for i in range(1, 31) if i % 5])
    lookup = SyncPair.lookup

    def broken_for_the_middle_partition(self: SyncPair, table: Any, batch: Any) -> Any:
        if any(row[1] == "n15" for row in batch):
            raise MySQLdb.OperationalError(1054, "Unknown column 'name' in 'field list'")
        return lookup(self, table, batch)

    monkeypatch.setattr(SyncPair, "lookup", broken_for_the_middle_partition)
    first = run_dag(pair.dag_id)
    states = {k: v for k, v in first.task_states.items() if k[0] == "compare"}
    assert sorted(states.values()) == ["failed", "success", "success"]
    assert first.tries[("compare", 1)] == 1 and pair.callbacks() == []
    assert insert_cursor(pair)["cursor"] == 30

    monkeypatch.setattr(SyncPair, "lookup", lookup)  # the table is fixed
    pair.run()
    assert sorted(pair.by_number()) == ["n05", "n10", "n15", "n20", "n25", "n30"]  # once each


@pytest.mark.parametrize("update", [False, True], ids=["insert-only", "with-update"])
def test_a_row_committed_after_a_higher_id_was_claimed_is_still_compared(pair: Pair, update: bool) -> None:
    """Issue 14's sequence, with two real connections: a transaction inserts a row (its id is
    allocated now) and stays open; another inserts the next id and commits; a run claims up to it;
    then the first commits. The late row is compared by a later run, within insertSettleSeconds."""
    import MySQLdb

    from tests.conftest import MYSQL

    if update:  # the row's update time is stamped at INSERT, long before it commits: outside any window
        pair.configure(src={"update": True, "updateColumn": "update_time", "updateScanSecond": 0})
    pair.add_source(("first", "x", None, None, None))
    pair.add_destination(("first", "x", None, None, None))
    pair.run()

    slow = MySQLdb.connect(**MYSQL, db=pair.src.name, charset="utf8mb4", autocommit=False)
    try:
        with slow.cursor() as cursor:
            cursor.execute("INSERT INTO `user` (number, name, update_time) VALUES ('late', 'x', '2000-01-01 00:00:00')")
            late_id = cursor.lastrowid
        pair.add_source(("quick", "y", None, None, None))  # the next id, committed at once
        pair.run()
        assert sorted(pair.by_number()) == ["quick"]  # 'late' is not visible yet
        slow.commit()
    finally:
        slow.close()

    gaps = insert_cursor(pair)["gaps"]
    assert [g[:2] for g in gaps] == [[late_id, late_id]]  # watched while it was missing
    pair.run()
    assert sorted(pair.by_number()) == ["late"]
    assert insert_cursor(pair)["gaps"] == []  # found: no longer watched
    pair.run()
    assert pair.callbacks() == []


def test_id_gaps_stop_being_watched_after_the_settle_window(pair: Pair) -> None:
    pair.configure(src={"insertSettleSeconds": 1})
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 6)])
    pair.src.execute("DELETE FROM `user` WHERE number IN ('n2', 'n4')")  # gaps that will never fill
    pair.run()
    assert [g[:2] for g in insert_cursor(pair)["gaps"]] == [[4, 4], [2, 2]] or sorted(
        g[:2] for g in insert_cursor(pair)["gaps"]
    ) == [[2, 2], [4, 4]]
    time.sleep(1.1)
    pair.run()
    assert insert_cursor(pair)["gaps"] == []


def test_a_cursor_beyond_the_source_end_fails_with_what_to_do(pair: Pair) -> None:
    """A server restart that reset AUTO_INCREMENT (or a truncate) would make new rows reuse ids the
    cursor already passed: never skip them silently."""
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 6)])
    pair.run()
    pair.src.execute("DELETE FROM `user` WHERE id > 3")

    result = run_dag(pair.dag_id)
    assert result.task_states[("scan", -1)] == "failed" and result.tries[("scan", -1)] == 1
    pair.run(conf={"start_id": 4})  # what the message says to do
    assert insert_cursor(pair)["cursor"] == 3


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE nid (uid BIGINT PRIMARY KEY, number VARCHAR(32), name VARCHAR(255))", "has no `id` column"),
        ("CREATE TABLE nid (id VARCHAR(36) PRIMARY KEY, number VARCHAR(32), name VARCHAR(255))", "holds str values"),
    ],
    ids=["no-id", "varchar-id"],
)
def test_a_source_without_an_integer_id_is_a_clear_error(pair: Pair, ddl: str, message: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from cupid_airflow.operators.scan import ScanInsertOperator

    pair.src.execute(ddl)
    pair.src.execute("INSERT INTO nid (" + ("uid" if "uid" in ddl else "id") + ", number) VALUES ('7', 'a')")
    config = json.loads(pair.config_path.read_text())
    config["src"]["table"] = "nid"
    config["des"][0]["columns"] = {"number": "number", "name": "name"}
    pair.config_path.write_text(json.dumps(config))
    task = ScanInsertOperator(task_id="scan_insert", config_file=str(pair.config_path))
    with pytest.raises(AirflowFailException, match=message) as error:
        task.execute({"params": {}, "run_id": "manual_1"})  # type: ignore[arg-type]
    assert "src.insert to false" in str(error.value)


def test_null_keys_and_repeated_destination_keys_have_a_documented_outcome(pair: Pair) -> None:
    """README "What counts as different": a NULL key matches nothing (reported missing, byValue
    null); a key repeated in the destination is in sync when any of its rows matches, else one
    type 2 event against the first row read."""
    for db in (pair.src, pair.des):
        db.execute("CREATE TABLE k (id BIGINT PRIMARY KEY AUTO_INCREMENT, number VARCHAR(32) NULL, name VARCHAR(9))")
    pair.src.execute("INSERT INTO k (number, name) VALUES (NULL, 'nokey'), ('dup-ok', 'b'), ('dup-bad', 'c')")
    pair.des.execute("INSERT INTO k (number, name) VALUES (NULL, 'nokey'), ('dup-ok', 'x'), ('dup-ok', 'b')")
    pair.des.execute("INSERT INTO k (number, name) VALUES ('dup-bad', 'x'), ('dup-bad', 'y')")
    config = json.loads(pair.config_path.read_text())
    config["src"]["table"] = "k"
    config["des"][0].update(table="k", columns={"number": "number", "name": "name"})
    pair.config_path.write_text(json.dumps(config))

    pair.run()
    found = {(b["byValue"], b["type"]): b for b in pair.callbacks()}
    assert set(found) == {(None, 1), ("dup-bad", 2)}
    assert found[("dup-bad", 2)]["desColumn"] == {"number": "dup-bad", "name": "x"}


def test_update_windows_across_the_autumn_clock_change_miss_no_row(pair: Pair) -> None:
    """New York, VARCHAR 'Y-m-d H:i:s' in local time, rows stamped in the hour that happens twice on
    2026-11-01 (01:00-02:00 EDT, then again EST). Text cannot tell the two apart; a window that
    crosses the change is widened so every such row is compared by it."""
    pair.src.execute("ALTER TABLE `user` MODIFY update_time VARCHAR(19) NOT NULL")
    local = {"updateTimeFormate": "Y-m-d H:i:s", "timezone": "America/New_York", "updateScanSecond": 0}
    pair.configure(src={"insert": False, "update": True, "updateColumn": "update_time", **local})
    pair.add_source(
        ("edt-0115", "x", None, None, None, "2026-11-01 01:15:00"),  # 05:15Z, or 06:15Z: text cannot say
        ("edt-0145", "x", None, None, None, "2026-11-01 01:45:00"),
        ("before", "x", None, None, None, "2026-11-01 00:30:00"),
        ("after", "x", None, None, None, "2026-11-01 02:30:00"),
    )
    pair.run(conf={"since": "2026-11-01T05:00:00Z", "until": "2026-11-01T07:00:00Z"})  # the re-check
    assert {"edt-0115", "edt-0145"} <= set(pair.by_number())  # widened by the hour: neighbours may come too

    pair.run(conf={"since": "2026-11-01T05:30:00Z", "until": "2026-11-01T06:30:00Z"})  # 01:30 EDT .. 01:30 EST
    assert {"edt-0115", "edt-0145"} <= set(pair.by_number())


@pytest.mark.parametrize("side", ["src", "des"])
def test_a_connection_cut_mid_compare_costs_a_retry_and_loses_nothing(pair: Pair, side: str) -> None:
    """The source's stream (or the destination's lookups) cut in the middle of a compare, through a
    loopback proxy: the compare retries and every divergence of the claim is reported, once."""
    from tests.conftest import MYSQL
    from tests.proxy import CuttableProxy

    rows = 30_000  # six 5,000-row batches: the cut lands mid-stream
    pair.add_source(*[(f"n{i:05d}", f"name {i}", None, None, BIG_TEXT[:200]) for i in range(rows)])
    pair.add_destination(*[(f"n{i:05d}", f"name {i}", None, None, BIG_TEXT[:200]) for i in range(rows) if i % 1000])
    proxy = CuttableProxy((MYSQL["host"], MYSQL["port"]))
    try:
        config = json.loads(pair.config_path.read_text())
        endpoint = config["src"] if side == "src" else config["des"][0]
        database = pair.src.name if side == "src" else pair.des.name
        endpoint["dsn"] = f"root:@tcp(127.0.0.1:{proxy.port})/{database}?charset=utf8mb4&readTimeout=10s"
        config["failureJobRetrySecond"] = 1
        pair.config_path.write_text(json.dumps(config))
        proxy.cut_after(2_000_000 if side == "src" else 300_000)  # a compare's traffic, not a scan's

        result = pair.run()
    finally:
        proxy.close()

    assert proxy.cuts == 1 and result.tries[("compare", 0)] == 2  # cut once, retried once
    assert sorted(pair.by_number()) == [f"n{i:05d}" for i in range(0, rows, 1000)]


def test_a_database_restart_between_scan_and_compare_costs_retries_and_loses_nothing(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides go through one loopback proxy that "restarts" the server right after the scan:
    every connection dropped, connections refused for 1.5 s. The compare's first tries fail to
    connect and retry; the run then reports every divergence of the claim, once."""
    from cupid_airflow.operators.scan import ScanOperator
    from tests.conftest import MYSQL
    from tests.proxy import CuttableProxy

    pair.add_source(*[(f"n{i:03d}", f"name {i}", None, None, None) for i in range(300)])
    pair.add_destination(*[(f"n{i:03d}", f"name {i}", None, None, None) for i in range(300) if i % 50])
    proxy = CuttableProxy((MYSQL["host"], MYSQL["port"]))
    scan = ScanOperator.run

    def scan_then_restart(self: ScanOperator, context: Any) -> Any:
        claimed = scan(self, context)
        proxy.restart(1.5)
        return claimed

    monkeypatch.setattr(ScanOperator, "run", scan_then_restart)
    try:
        config = json.loads(pair.config_path.read_text())
        for endpoint, database in ((config["src"], pair.src.name), (config["des"][0], pair.des.name)):
            endpoint["dsn"] = f"root:@tcp(127.0.0.1:{proxy.port})/{database}?charset=utf8mb4&timeout=2s"
        config["failureJobRetrySecond"] = 1
        pair.config_path.write_text(json.dumps(config))

        result = pair.run()
        assert proxy.restarts == 1 and result.tries[("compare", 0)] >= 2  # refused at first, then retried
        assert sorted(pair.by_number()) == [f"n{i:03d}" for i in range(0, 300, 50)]

        monkeypatch.setattr(ScanOperator, "run", scan)
        pair.run()  # the next scan settles the claim: its compares all succeeded in the end
        assert pair.callbacks() == [] and insert_cursor(pair)["open"] == {}
    finally:
        proxy.close()
