"""Event-driven runs end to end: the real triggerer watches a source, the real scheduler starts the
pair DAGs when it changed, nobody triggers anything.

One source table with two destinations (two DAGs) polled once per second: a new row and an
updated row are called back for both destinations; the two DAGs share one poll (counted in the
server's general log); a triggerer restarted between two inserts reports both, each once, with
no burst of runs; a watched DAG backfills; an idle source starts no run at all; and a first pass
larger than ``maxRowsPerRun`` goes on run after run by itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import MySqlDatabase
from tests.pairs import DES_TABLE, SRC_TABLE
from tests.stack import AirflowStack, Recorder, deployment, recording, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

DAGS = ("cupid_watch_a", "cupid_watch_b")
DES_TABLES = ("user", "user_b")
POLL_MS = 1000


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with recording() as recorder:
        yield recorder


@pytest.fixture
def stack() -> Iterator[AirflowStack]:
    with deployment("cupid-e2e-watch-") as stack:
        yield stack


def _config(src: MySqlDatabase, table: str, des: MySqlDatabase, receiver: Recorder) -> dict[str, Any]:
    return {
        "failureJobRetrySecond": 2,
        "schedule": "@yearly",  # the safety schedule stays out of the way: every run here is the watcher's
        "maxRowsPerRun": 8,  # the first pass takes three runs
        "confirmSeconds": 0,  # called back at once: this is about the watcher (tests/test_e2e_lag.py confirms)
        "src": {
            "dsn": src.dsn,
            "table": table,
            "byColumn": "number",
            "updateColumn": "update_time",
            "insertIntervalMillisecond": POLL_MS,
            "updateIntervalMillisecond": POLL_MS,
        },
        "des": [
            {
                "dsn": des.dsn,
                "table": des_table,
                "columns": {"number": "number", "name": "name"},
                "byColumn": "number",
                "callbackNotification": {"url": f"{receiver.url}/cb"},
                "dagId": dag_id,
            }
            for dag_id, des_table in zip(DAGS, DES_TABLES, strict=True)
        ],
    }


def _posts(receiver: Recorder, number: str) -> dict[str, int]:
    """How many callbacks each destination table got for the row ``number``."""
    with receiver.lock:
        counts = dict.fromkeys(DES_TABLES, 0)
        for body in receiver.bodies:
            if body["byValue"] == number:
                counts[body["desTable"]] += 1
        return counts


def _reported(receiver: Recorder, number: str, event_type: int) -> bool:
    with receiver.lock:
        tables = {b["desTable"] for b in receiver.bodies if b["byValue"] == number and b["type"] == event_type}
    return tables == set(DES_TABLES)


def _watcher_runs(stack: AirflowStack) -> dict[str, list[dict[str, Any]]]:
    return {dag_id: [r for r in stack.runs(dag_id) if r["run_type"] == "asset_triggered"] for dag_id in DAGS}


def _all_done(stack: AirflowStack) -> dict[str, list[dict[str, Any]]] | None:
    runs = _watcher_runs(stack)
    finished = all(r["state"] in ("success", "failed") for v in runs.values() for r in v)
    return runs if finished and all(runs.values()) else None


def _source_polls(src: MySqlDatabase, table: str, seconds: float) -> int:
    """Statements the watcher sent to the source over ``seconds``, from the server's general log."""
    before = src.execute("SELECT @@GLOBAL.general_log, @@GLOBAL.log_output")[0]
    src.execute("SET GLOBAL log_output = 'TABLE'")
    src.execute("SET GLOBAL general_log = 'ON'")
    started = src.execute("SELECT NOW(6)")[0][0]
    try:
        time.sleep(seconds)
    finally:
        src.execute(f"SET GLOBAL general_log = {int(before[0])}")
        src.execute("SET GLOBAL log_output = %s", (before[1],))
    pattern = f"%MAX(`id`) FROM %`{table}`)%"  # database-qualified: a lane's connection serves every database
    found = src.execute(
        "SELECT COUNT(*) FROM mysql.general_log WHERE event_time >= %s AND command_type = 'Query' "
        "AND CONVERT(argument USING utf8mb4) LIKE %s",
        (started, pattern),
    )[0][0]
    if not before[0]:
        src.execute("TRUNCATE TABLE mysql.general_log")
    return int(found)


def test_changes_start_runs_without_a_trigger(
    stack: AirflowStack, receiver: Recorder, mysql_db: Callable[[str], MySqlDatabase]
) -> None:
    src, des = mysql_db("src"), mysql_db("des")
    table = f"watched_{uuid.uuid4().hex[:8]}"  # unique on the server: the general log is counted by it
    src.execute(SRC_TABLE.replace("`user`", f"`{table}`"))
    for des_table in DES_TABLES:
        des.execute(DES_TABLE.replace("`user`", f"`{des_table}`"))
    rows = [(f"n{i}", f"name {i}") for i in range(1, 21)]
    src.executemany(f"INSERT INTO `{table}` (number, name) VALUES (%s, %s)", rows)
    for des_table in DES_TABLES:
        des.executemany(f"INSERT INTO `{des_table}` (number, name) VALUES (%s, %s)", rows[:18])
    stack.start()

    # 1. A config dropped in: both DAGs appear and run their first pass. The safety schedule's
    #    latest interval claims maxRowsPerRun (8) of the 20 rows; a run that leaves ids behind
    #    queues the next itself (8 more, then the last 4: the replicas lack n19 and n20). The
    #    watchers adopt the source as it is, starting nothing more.
    (stack.configs / "watched.json").write_text(json.dumps(_config(src, table, des, receiver)))
    for dag_id in DAGS:
        wait_for(lambda d=dag_id: stack.dag(d), 120, f"{dag_id} in /api/v2/dags")

    def first_passes() -> dict[str, list[dict[str, Any]]] | None:
        runs = {dag_id: stack.runs(dag_id) for dag_id in DAGS}
        done = all(len(r) >= 3 and all(x["state"] in ("success", "failed") for x in r) for r in runs.values())
        return runs if done else None

    first = wait_for(first_passes, 180, "the first passes of both DAGs", every=1)
    for runs in first.values():
        kinds = [(r["run_type"], r["state"]) for r in runs]
        assert kinds == [("scheduled", "success"), *[("asset_triggered", "success")] * 2], stack.log_tail()
    reported = sorted((b["byValue"], b["desTable"]) for b in receiver.bodies)
    assert reported == sorted((n, t) for n in ("n19", "n20") for t in DES_TABLES)
    time.sleep(3)  # several polls: nothing changed, nothing starts
    assert {dag_id: len(stack.runs(dag_id)) for dag_id in DAGS} == dict.fromkeys(DAGS, 3)

    # 2. A new row: called back for both destinations, with no trigger from anyone.
    src.execute(f"INSERT INTO `{table}` (number, name) VALUES ('n21', 'fresh')")
    inserted = time.monotonic()
    wait_for(lambda: _reported(receiver, "n21", 1), 90, "the callbacks of the new row", every=0.2)
    print(f"insert -> both callbacks: {time.monotonic() - inserted:.1f} s")

    # 3. An update of an existing row: called back as different.
    src.execute(f"UPDATE `{table}` SET name = 'renamed', update_time = UTC_TIMESTAMP() WHERE number = 'n5'")
    updated = time.monotonic()
    wait_for(lambda: _reported(receiver, "n5", 2), 90, "the callbacks of the updated row", every=0.2)
    print(f"update -> both callbacks: {time.monotonic() - updated:.1f} s")
    # A row or two: each run compared and called back in its scan task (inlineRows), one task process.
    for dag_id, runs in wait_for(lambda: _all_done(stack), 90, "the runs to finish", every=1).items():
        for run in runs:
            states = {(t["task_id"], t["state"]) for t in stack.task_instances(dag_id, run["dag_run_id"])}
            assert states == {("scan", "success"), ("compare", "skipped"), ("callback", "skipped")}, states

    # 4. Two DAGs, one poll: about one statement per interval reaches the source, not two.
    polls = _source_polls(src, table, 10)
    assert 5 <= polls <= 14, f"{polls} polls of the source in 10 s at one per {POLL_MS} ms"

    # 5. The triggerer restarts (SIGTERM, start again) between two inserts: both reported, each
    #    once per destination, by a run or two, not a burst.
    before = {dag_id: len(runs) for dag_id, runs in _watcher_runs(stack).items()}
    assert stack.stop_component("triggerer") == 0
    src.execute(f"INSERT INTO `{table}` (number, name) VALUES ('n22', 'while the triggerer was down')")
    stack.start_component("triggerer")
    wait_for(lambda: _reported(receiver, "n22", 1), 120, "the row inserted while the triggerer was down", every=0.5)
    wait_for(lambda: _all_done(stack), 90, "the runs to finish", every=1)
    src.execute(f"INSERT INTO `{table}` (number, name) VALUES ('n23', 'after the restart')")
    wait_for(lambda: _reported(receiver, "n23", 1), 90, "the row inserted after the restart", every=0.5)
    done = wait_for(lambda: _all_done(stack), 90, "the runs to finish", every=1)
    for number in ("n21", "n22", "n23"):
        assert _posts(receiver, number) == dict.fromkeys(DES_TABLES, 1), number
    for dag_id, runs in done.items():
        assert 2 <= len(runs) - before[dag_id] <= 3, (dag_id, len(runs) - before[dag_id])
        assert {r["state"] for r in runs} == {"success"}

    # 6. A watched DAG still backfills: its safety timetable gives the runs their intervals.
    src.execute(
        f"UPDATE `{table}` SET name = 'edited in 2024', update_time = '2024-06-01 12:00:00' WHERE number = 'n7'"
    )
    stack.cli("backfill", "create", "--dag-id", DAGS[0], "--from-date", "2024-01-01", "--to-date", "2024-01-01")

    def backfilled() -> list[dict[str, Any]] | None:
        runs = [r for r in stack.runs(DAGS[0]) if r["run_type"] == "backfill"]
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    (backfill,) = wait_for(backfilled, 120, "the backfill run", every=1)
    assert backfill["state"] == "success" and backfill["logical_date"].startswith("2024-01-01")
    with receiver.lock:
        edited = [b for b in receiver.bodies if b["byValue"] == "n7"]
    assert [(b["type"], b["desTable"], b["srcColumn"]["name"]) for b in edited] == [(2, "user", "edited in 2024")]
    done = wait_for(lambda: _all_done(stack), 60, "the runs to finish", every=1)

    # 7. An idle source starts nothing.
    idle = {dag_id: len(runs) for dag_id, runs in done.items()}
    time.sleep(8)
    assert {dag_id: len(runs) for dag_id, runs in _watcher_runs(stack).items()} == idle
    assert stack.dead_components() == []
