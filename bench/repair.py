"""``make bench-repair``: how fast cupid repairs, on real MariaDB.

1. **Rows repaired per second.** A destination missing 10,000 of the source's 20,000 rows and
   holding 10,000 garbled: the ``repair`` task (``apply`` mode, default ``batchRows``) plans the
   20,000 fixes from both sides' rows, writes the fix SQL, applies the guarded statements through
   its write connection, keeping its outcomes after every batch, and reads them back; against the
   floor, the same rows written by plain batched statements (``executemany`` INSERTs and UPDATEs
   by key, 500 a transaction, nothing read, nothing guarded). Both end with equal tables.
2. **From a lost change's commit to its repair**, with the default window: a real deployment, one
   watched pair with cupid's defaults and ``repair: {mode: apply}`` beside a replicator that applies
   each change 5 s late and loses 10 of 80 (tests/lag.py's L = 5 case). Printed: the delay from
   each lost change's commit to its callback and to its repair at the destination (p50, max), and
   the changes that merely lagged yet were repaired (should be 0). Takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import MYSQL, MySqlDatabase

ROWS = 20_000
BATCH = 500
TABLE = (
    "CREATE TABLE item (id BIGINT PRIMARY KEY AUTO_INCREMENT, sku VARCHAR(16) NOT NULL UNIQUE, label VARCHAR(64), "
    "amount DECIMAL(12,2), note TEXT, update_time DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00')"
)
INSERT = "INSERT INTO item (sku, label, amount, note) VALUES (%s, %s, %s, %s)"
COLUMNS = ("sku", "label", "amount", "note")


class _Store(dict[str, Any]):
    """The task state store's shape, in memory."""

    def set(self, key: str, value: Any) -> None:
        self[key] = json.loads(json.dumps(value))  # what the Execution API would keep

    def delete(self, key: str) -> None:
        self.pop(key, None)


def _garble(des: MySqlDatabase, rows: list[tuple[Any, ...]]) -> None:
    """The destination: every odd row missing, every even one with a wrong label."""
    des.execute("TRUNCATE TABLE item")
    garbled = [
        (sku, f"{label} (garbled)", amount, note) for i, (sku, label, amount, note) in enumerate(rows) if i % 2 == 0
    ]
    for start in range(0, len(garbled), 5000):
        des.executemany(
            "INSERT INTO item (sku, label, amount, note) VALUES (%s, %s, %s, %s)", garbled[start : start + 5000]
        )


def _same(src: MySqlDatabase, des: MySqlDatabase) -> bool:
    select = f"SELECT {', '.join(COLUMNS)} FROM item ORDER BY sku"
    return bool(src.execute(select) == des.execute(select))


def throughput(make_db: Any) -> str:
    from cupid_airflow.core.compare import PairComparer
    from cupid_airflow.operators.repair import RepairOperator

    src, des = make_db("src"), make_db("des")
    src.execute(TABLE)
    des.execute(TABLE)
    rows = [(f"s{i:06d}", f"label {i}", f"{i}.25", f"note {i} " * 4) for i in range(ROWS)]
    for start in range(0, ROWS, 5000):
        src.executemany(
            "INSERT INTO item (sku, label, amount, note) VALUES (%s, %s, %s, %s)", rows[start : start + 5000]
        )
    _garble(des, rows)

    os.environ["AIRFLOW_CONN_CUPID_BENCH_WRITE"] = (
        f"mysql://{MYSQL['user']}@{MYSQL['host']}:{MYSQL['port']}/{des.name}?charset=utf8mb4"
    )
    folder = Path(tempfile.mkdtemp(prefix="cupid-bench-repair-"))
    config = {
        "src": {"dsn": src.dsn, "table": "item", "byColumn": "sku", "update": False},
        "des": [{
            "dsn": des.dsn, "table": "item", "columns": {c: c for c in COLUMNS}, "byColumn": "sku",
            "callbackNotification": {"url": "127.0.0.1:9/unused"},
            "repair": {"mode": "apply", "connId": "cupid_bench_write", "approveRows": ROWS, "dir": str(folder)},
        }],
    }  # fmt: skip
    path = folder / "bench.json"
    path.write_text(json.dumps(config))
    comparer = PairComparer("cupid_bench", "item", "sku", COLUMNS, COLUMNS)
    columns = ", ".join(COLUMNS)
    events = comparer.compare(
        src.execute(f"SELECT id, sku, {columns} FROM item ORDER BY sku"),  # (id, key, *columns)
        des.execute(f"SELECT sku, {columns} FROM item ORDER BY sku"),  # (key, *columns)
    )
    assert len(events) == ROWS, len(events)

    operator = RepairOperator(task_id="repair", config_file=str(path), destination=0, events=events)
    started = time.perf_counter()
    summary = operator.execute({"run_id": "bench", "task_state_store": _Store()})  # type: ignore[arg-type]
    cupid = time.perf_counter() - started
    assert summary["repaired"] == ROWS and _same(src, des), summary

    _garble(des, rows)
    conn = des.conn
    started = time.perf_counter()
    conn.autocommit(False)
    missing = [r for i, r in enumerate(rows) if i % 2 == 1]
    garbled = [(label, amount, note, sku) for i, (sku, label, amount, note) in enumerate(rows) if i % 2 == 0]
    with conn.cursor() as cursor:
        for start in range(0, len(missing), BATCH):
            cursor.executemany(INSERT, missing[start : start + BATCH])
            conn.commit()
        for start in range(0, len(garbled), BATCH):
            cursor.executemany("UPDATE item SET label = %s, amount = %s, note = %s WHERE sku = %s",
                               garbled[start : start + BATCH])  # fmt: skip
            conn.commit()
    floor = time.perf_counter() - started
    conn.autocommit(True)
    assert _same(src, des)
    return (
        f"{ROWS:,} rows ({ROWS // 2:,} missing, {ROWS // 2:,} different): cupid's repair task {cupid:.2f} s "
        f"({ROWS / cupid:,.0f} rows/s: plan, fix SQL, guarded apply, read back); plain batched statements "
        f"{floor:.2f} s ({ROWS / floor:,.0f} rows/s); cupid takes {cupid / floor:.1f}x the floor's time"
    )


def latency(make_db: Any) -> str:
    from tests.lag import CASES, Scenario
    from tests.stack import deployment, wait_for

    case = next(c for c in CASES if c.name == "l5")
    with deployment("cupid-bench-repair-", {}) as stack:
        stack.start()
        scenario = Scenario(stack, make_db, (case,), prefix="repair")
        replica = scenario.replicas["l5"]
        stack.cli("connections", "add", "cupid_bench_write", "--conn-uri",
                  f"mysql://root@127.0.0.1:3306/{replica.des.name}")  # fmt: skip
        config_path = stack.configs / "repair_l5.json"
        config = json.loads(config_path.read_text())
        config["des"][0]["repair"] = {"mode": "apply", "connId": "cupid_bench_write"}
        config_path.write_text(json.dumps(config))
        arrived: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:  # when each version reaches the destination (replicated or repaired)
            import MySQLdb

            conn = MySQLdb.connect(**MYSQL, db=replica.des.name, autocommit=True)  # the replicator has its own
            with conn.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute("SELECT name FROM `user`")
                    for (name,) in cursor.fetchall():
                        arrived.setdefault(name, time.time())
                    time.sleep(0.1)
            conn.close()

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            wait_for(scenario.ready, 180, "the pair's first pass", every=1)
            time.sleep(5)
            watcher.start()
            scenario.run()
            scenario.workloads["l5"].join(300)
            lost = [c for c in replica.changes if c.lost]
            try:
                wait_for(lambda: all(c.name in arrived for c in lost) or None, 180, "lost changes repaired", every=1)
            except TimeoutError:
                print(scenario.explain("l5"), [c.name for c in lost if c.name not in arrived], flush=True)
                for r in stack.api(f"dags/{scenario.dag('l5')}/dagRuns", limit=5, order_by="-id")["dag_runs"]:
                    tis = stack.task_instances(scenario.dag("l5"), r["dag_run_id"])
                    print(r["dag_run_id"], r["state"], [(t["task_id"], t["map_index"], t["state"]) for t in tis])
                raise
            time.sleep(15)  # a late false repair would show now
            found = scenario.outcome("l5")
            repair = [arrived[c.name] - c.at for c in lost]
            # a change that merely lagged but reached the destination before the replicator applied it
            early = sum(1 for c in replica.changes if not c.lost and arrived.get(c.name, 1e18) < c.at + 4.5)
            p50 = statistics.median(repair)
            return (
                f"L = 5 s, {len(replica.changes)} changes, {len(lost)} lost: commit to callback p50 {found.p50:.1f} s "
                f"max {found.max:.1f} s; commit to repair p50 {p50:.1f} s max {max(repair):.1f} s "
                f"(repair / callback p50 {p50 / found.p50:.2f}x); changes in flight repaired "
                f"or called back: {early} / {sum(found.false.values())}"
            )
        finally:
            stop.set()
            scenario.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("throughput", "latency"))
    args = parser.parse_args()
    made: list[MySqlDatabase] = []
    run = uuid.uuid4().hex[:6]

    def make_db(name: str) -> MySqlDatabase:
        made.append(MySqlDatabase(f"cupid_bench_{run}_{name}"))
        return made[-1]

    try:
        if args.only in (None, "throughput"):
            print(throughput(make_db), flush=True)
        if args.only in (None, "latency"):
            print(latency(make_db), flush=True)
    finally:
        for db in made:
            db.drop()


if __name__ == "__main__":
    main()
