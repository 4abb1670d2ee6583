"""Detection latency and the fixed cost of a run under the real scheduler (issue #5).

    python bench/latency.py [--rows 10] [--runs 5]

Starts the deployment the end-to-end test uses (scheduler, dag-processor, triggerer, api-server;
LocalExecutor; a throwaway PostgreSQL metadata database) with a real MariaDB pair and a loopback
receiver, then measures:

  (a) the fixed Airflow cost of one run: ``--runs`` triggered runs of a DAG whose source gained
      one row that matches its replica, so every task runs (scan_insert, scan_update, one
      compare, one callback with nothing to send); time from queued to finished, from the API;
  (b) detection latency on the shortest documented schedule (``@continuous``, one run after
      another): ``--rows`` divergent rows inserted one at a time at random moments; time from
      the INSERT's commit to its callback's arrival, p50 and max.

Both are quoted against cupid-go's own figure: its insert scan polls every 2 s
(``insertIntervalMillisecond``), so it notices a new row within about 2 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.stack import AirflowStack, Recorder, wait_for  # noqa: E402

CUPID_GO_SECONDS = 2.0
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": ""}
TABLE = "CREATE TABLE user (id BIGINT PRIMARY KEY, number VARCHAR(32) UNIQUE, name VARCHAR(64), update_time DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3), KEY (update_time))"  # noqa: E501


def _config(db: str, receiver: Recorder, dag_id: str, schedule: str) -> dict[str, Any]:
    dsn = f"root:@tcp(127.0.0.1:3306)/{db}"
    return {
        "schedule": schedule,
        "src": {"dsn": dsn + "_src", "table": "user", "byColumn": "number", "updateColumn": "update_time"},
        "des": [
            {
                "dsn": dsn + "_des",
                "table": "user",
                "columns": {"number": "number", "name": "name"},
                "byColumn": "number",
                "callbackNotification": {"url": f"{receiver.url}/cb"},
                "dagId": dag_id,
            }
        ],
    }


def _between(start: str, end: str) -> float:
    """Seconds between two API timestamps."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10, help="divergent rows for the latency figure")
    parser.add_argument("--runs", type=int, default=5, help="triggered runs for the fixed-cost figure")
    args = parser.parse_args()

    import MySQLdb

    db = f"cupid_latency_{uuid.uuid4().hex[:8]}"
    conn = MySQLdb.connect(**MYSQL, autocommit=True)
    cursor = conn.cursor()
    for side in ("src", "des"):
        cursor.execute(f"CREATE DATABASE {db}_{side}")
        cursor.execute(f"USE {db}_{side}")
        cursor.execute(TABLE)
    next_id = iter(range(1, 1_000_000))

    def insert(*sides: str) -> tuple[str, float]:
        row_id = next(next_id)
        for side in sides:
            sql = f"INSERT INTO {db}_{side}.user (id, number, name) VALUES (%s, %s, %s)"
            cursor.execute(sql, (row_id, f"r{row_id}", "x"))
        return f"r{row_id}", time.time()

    receiver = Recorder().start()
    home = Path(tempfile.mkdtemp(prefix="cupid-latency-"))
    stack = AirflowStack(home)
    try:
        t0 = time.monotonic()
        stack.start()
        print(f"deployment up in {time.monotonic() - t0:.1f} s ({stack.url})")

        # (a) fixed cost: a DAG that runs only when triggered (@once ran its one run at unpause).
        (stack.configs / "fixed.json").write_text(json.dumps(_config(db, receiver, "cupid_fixed", "@once")))
        wait_for(lambda: stack.dag("cupid_fixed"), 120, "cupid_fixed to appear")
        wait_for(lambda: [r for r in stack.runs("cupid_fixed") if r["state"] == "success"], 120, "the @once run")
        totals, tasks_only = [], []
        for i in range(args.runs):
            insert("src", "des")  # one new row that matches: every task runs, nothing to send
            run = stack.api("dags/cupid_fixed/dagRuns", "POST", {"logical_date": None, "dag_run_id": f"fixed_{i}"})
            run = stack.wait_run_done("cupid_fixed", run["dag_run_id"], 120)
            assert run["state"] == "success", run
            tis = stack.task_instances("cupid_fixed", run["dag_run_id"])
            assert {t["task_id"] for t in tis if t["state"] == "success"} >= {"scan", "compare", "callback"}
            totals.append(_between(run["queued_at"], run["end_date"]))
            tasks_only.append(sum(t["duration"] or 0 for t in tis))
            print(f"  run {i}: {totals[-1]:.1f} s queued->done, tasks' own time {tasks_only[-1]:.1f} s")
        stack.api("dags/cupid_fixed", "PATCH", {"is_paused": True})

        # (b) latency on @continuous.
        (stack.configs / "continuous.json").write_text(
            json.dumps(_config(db, receiver, "cupid_continuous", "@continuous"))
        )
        wait_for(lambda: stack.dag("cupid_continuous"), 120, "cupid_continuous to appear")
        wait_for(lambda: [r for r in stack.runs("cupid_continuous") if r["state"] == "success"], 120, "a first run")
        cycle = statistics.median(totals)
        latencies = []
        for i in range(args.rows):
            time.sleep(random.uniform(0, cycle))  # land anywhere in a run's cycle
            number, inserted = insert("src")  # missing from the replica: a type-1 callback
            wait_for(lambda n=number: n in receiver.by_value(1), 180, f"the callback for {number}", every=0.05)
            latencies.append(receiver.arrivals[receiver.by_value(1)[number]["eventId"]] - inserted)
            print(f"  row {i}: {latencies[-1]:.1f} s insert->callback")
        runs = [r for r in stack.runs("cupid_continuous") if r["state"] == "success"]
        gaps = [_between(a["start_date"], b["start_date"]) for a, b in itertools.pairwise(runs)]
    finally:
        stack.stop()
        stack.drop_database()
        shutil.rmtree(home, ignore_errors=True)
        receiver.stop()
        for side in ("src", "des"):
            cursor.execute(f"DROP DATABASE IF EXISTS {db}_{side}")

    p50, worst = statistics.median(latencies), max(latencies)
    print()
    print(f"fixed cost of one run (all tasks, no divergence), median of {args.runs}: {cycle:.1f} s queued->done")
    print(f"  of which the tasks' own run time: {statistics.median(tasks_only):.1f} s")
    print("  the rest is scheduling: queueing, process start, the scheduler loop between dependent tasks")
    print(f"@continuous: one run every {statistics.median(gaps):.1f} s (median of {len(gaps)} gaps between runs)")
    print(f"detection latency over {args.rows} rows: p50 {p50:.1f} s, max {worst:.1f} s")
    print(
        f"against cupid-go's ~{CUPID_GO_SECONDS:.0f} s insert polling: "
        f"p50 {p50 / CUPID_GO_SECONDS:.1f}x, max {worst / CUPID_GO_SECONDS:.1f}x its figure; "
        f"one run costs {cycle / CUPID_GO_SECONDS:.1f}x its polling interval"
    )


if __name__ == "__main__":
    main()
