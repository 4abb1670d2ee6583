"""Scan + compare throughput on MariaDB against cupid-go's algorithm and the database floor (issue #3).

    python bench/scan_compare.py [--rows 1000000] [--sample 20000] [--skip-e2e] [--gap-every 100]

Builds a source table of ``--rows`` rows and a destination with 1% divergence (0.5% missing,
0.5% changed, spread evenly), then times, in one run:

  (a) the first insert pass end to end through the real operators (``dag.test()`` of the
      factory's DAG, Airflow overhead and the callbacks to a local receiver included), and the
      compare path alone (partitioning + every partition's compare, no Airflow scheduling);
  (b) cupid-go's algorithm, two queries per row, on a ``--sample`` of ids, scaled up;
  (c) the database floor: the same source reads and destination key lookups that compare
      issues, with the driver and no processing, serially.

Prints rows/s for each and the ratios the issue asks for; peak memory of a compare task is
measured in a separate process. ``--gap-every N`` deletes every N-th source id first (1% id gaps
with 100) and times the claim's gap detection (late commits, issue #14) against the compare path.
Needs MariaDB on 127.0.0.1:3306 (root, no password) for its SEQUENCE engine. Databases are
created fresh and dropped at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": ""}
CHUNK = 200_000  # the default chunkSize


def connect(db: str | None = None) -> Any:
    import MySQLdb

    return MySQLdb.connect(**MYSQL, db=db or "", charset="utf8mb4", autocommit=True)


def build(name: str, rows: int) -> None:
    src, des = f"{name}_src", f"{name}_des"
    conn = connect()
    cur = conn.cursor()
    for db in (src, des):
        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
    table = """CREATE TABLE `{db}`.`user` (
        id BIGINT PRIMARY KEY AUTO_INCREMENT, number VARCHAR(32) NOT NULL, name VARCHAR(64),
        avatar VARCHAR(255), amount DECIMAL(12,2), update_time DATETIME NOT NULL,
        UNIQUE KEY (number), KEY (update_time))"""
    cur.execute(table.format(db=src))
    cur.execute(table.format(db=des))
    cur.execute(
        f"INSERT INTO `{src}`.`user` (id, number, name, avatar, amount, update_time) "
        f"SELECT seq, CONCAT('U', LPAD(seq, 10, '0')), CONCAT('name ', seq), "
        f"CONCAT('https://cdn.example.com/avatar/', seq, '.png'), (seq % 100000) / 100, "
        f"'2026-01-01' + INTERVAL seq SECOND FROM `{src}`.seq_1_to_{rows}"
    )
    cur.execute(f"INSERT INTO `{des}`.`user` SELECT * FROM `{src}`.`user` WHERE id % 200 <> 100")  # 0.5% missing
    cur.execute(f"UPDATE `{des}`.`user` SET name = CONCAT(name, ' (stale)') WHERE id % 200 = 0")  # 0.5% changed
    cur.execute(f"ANALYZE TABLE `{src}`.`user`, `{des}`.`user`")
    cur.fetchall()
    conn.close()


def punch_gaps(name: str, every: int) -> None:
    conn = connect()
    conn.cursor().execute(f"DELETE FROM `{name}_src`.`user` WHERE id % {every} = {every // 2}")
    conn.close()


def gap_detection(config_path: Path, total: int) -> tuple[float, int]:
    """The claim's late-commit bookkeeping: one LAG() pass over the claimed ids, as scan_insert runs it."""
    from cupid_airflow.core.claims import GAP_LIMIT
    from cupid_airflow.pair import SyncPair

    pair = SyncPair.load(str(config_path), 0, "bench")
    with pair.source_table() as table:
        t0 = time.perf_counter()
        gaps = table.id_gaps(0, total, GAP_LIMIT + 1)
        return time.perf_counter() - t0, len(gaps)


def drop(name: str) -> None:
    conn = connect()
    for db in (f"{name}_src", f"{name}_des"):
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{db}`")
    conn.close()


def write_config(folder: Path, name: str, port: int) -> Path:
    config = {
        "src": {
            "dsn": f"root:@tcp(127.0.0.1:3306)/{name}_src?charset=utf8mb4",
            "table": "user",
            "byColumn": "number",
            "update": False,
        },
        "des": [
            {
                "dsn": f"root:@tcp(127.0.0.1:3306)/{name}_des?charset=utf8mb4",
                "table": "user",
                "columns": {"number": "number", "name": "name", "avatar": "avatar", "amount": "amount"},
                "byColumn": "number",
                "callbackNotification": {"url": f"127.0.0.1:{port}/cb"},
            }
        ],
        "maxRowsPerRun": 10_000_000,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


# ---------------------------------------------------------------------------- (b) cupid-go


def cupid_go(name: str, sample: int, total: int) -> float:
    """Two queries per row, values pasted into SQL, compared as strings: cupid-go's compare job."""
    src, des = connect(f"{name}_src"), connect(f"{name}_des")
    scur, dcur = src.cursor(), des.cursor()
    step = max(1, total // sample)
    ids = list(range(1, total + 1, step))[:sample]
    columns = ["number", "name", "avatar", "amount"]
    differences = 0
    t0 = time.perf_counter()
    for row_id in ids:
        scur.execute(f"SELECT * FROM user WHERE id = {row_id}")
        names = [d[0] for d in scur.description]
        row = dict(zip(names, scur.fetchone()))
        dcur.execute(f"SELECT * FROM user WHERE number = '{row['number']}'")
        found = dcur.fetchone()
        if found is None:
            differences += 1
            continue
        drow = dict(zip([d[0] for d in dcur.description], found))
        differences += sum(1 for c in columns if str(row[c]) != str(drow[c]))
    elapsed = time.perf_counter() - t0
    src.close()
    des.close()
    return len(ids) / elapsed


# ---------------------------------------------------------------------------- (c) the floor


def floor(name: str, total: int) -> tuple[float, float, float]:
    """The source reads and destination IN lookups compare issues, serially, with no processing."""
    import MySQLdb.cursors

    from cupid_airflow.core.compare import BATCH_SIZE

    src, des = connect(f"{name}_src"), connect(f"{name}_des")
    read_s = lookup_s = 0.0
    rows = 0
    bounds = [*range(0, total, CHUNK), total]
    for after, upto in itertools.pairwise(bounds):
        cur = src.cursor(MySQLdb.cursors.SSCursor)
        t = time.perf_counter()
        cur.execute(
            "SELECT `id`, `number`, `number`, `name`, `avatar`, `amount` FROM `user` WHERE `id` > %s AND `id` <= %s",
            (after, upto),
        )
        read_s += time.perf_counter() - t
        while True:
            t = time.perf_counter()
            batch = cur.fetchmany(BATCH_SIZE)
            read_s += time.perf_counter() - t
            if not batch:
                break
            rows += len(batch)
            keys = [r[1] for r in batch]
            t = time.perf_counter()
            dcur = des.cursor()
            dcur.execute(
                "SELECT `number`, `number`, `name`, `avatar`, `amount` FROM `user` WHERE `number` IN ("
                + ", ".join(["%s"] * len(keys))
                + ")",
                keys,
            )
            dcur.fetchall()
            lookup_s += time.perf_counter() - t
        cur.close()
    src.close()
    des.close()
    return rows / (read_s + lookup_s), rows / read_s, rows / lookup_s


# ---------------------------------------------------------------------------- (a) cupid-airflow


class _ChunkSink:
    """Stands in for the task instance a compare pushes event chunks to (past 10,000 events)."""

    map_index = -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def compare_path(config_path: Path, total: int, chunk: int = CHUNK) -> tuple[float, int, float]:
    """Partitioning plus every partition's compare, in this process, no Airflow scheduling."""
    from cupid_airflow.core.compare import ID_COLUMN
    from cupid_airflow.core.events import event_types
    from cupid_airflow.core.partitions import id_partitions
    from cupid_airflow.operators.compare import CompareOperator
    from cupid_airflow.pair import SyncPair

    pair = SyncPair.load(str(config_path), 0, "bench")
    t0 = time.perf_counter()
    with pair.source_table() as table:
        parts = id_partitions(table, 0, int(table.max_id()), chunk, ID_COLUMN)
    events = 0
    for part in parts:
        op = CompareOperator(task_id="compare", config_file=str(config_path), partition=part)
        output = op.execute({"ti": _ChunkSink()})  # type: ignore[typeddict-item]
        events += sum(event_types(output).values())
    elapsed = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return total / elapsed, events, peak_mb


def start_receiver() -> tuple[subprocess.Popen[str], int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "receiver.py"), str(port)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def received(port: int) -> int:
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{port}/count") as response:
        return int(response.read())


def end_to_end(config_dir: Path, dag_id: str, total: int, port: int) -> tuple[float, str, int]:
    from airflow.dag_processing.dagbag import DagBag

    os.environ["CUPID_CONFIG_DIR"] = str(config_dir)
    bag = DagBag(dag_folder=str(REPO / "dags" / "cupid_dags.py"), bundle_path=REPO / "dags")
    dag = bag.dags[dag_id]
    t0 = time.perf_counter()
    dr = dag.test()
    return total / (time.perf_counter() - t0), str(dr.state), received(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--skip-e2e", action="store_true", help="skip (a) end to end through dag.test()")
    parser.add_argument("--gap-every", type=int, default=0, help="delete every N-th source id (100: 1%% gaps)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # config_path total chunk: memory probe
    args = parser.parse_args()

    if args.child:
        rate, events, peak = compare_path(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        print(json.dumps({"rate": rate, "events": events, "peak_mb": peak}))
        return

    home = tempfile.mkdtemp(prefix="cupid-bench-")
    os.environ.update(AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
    name = f"cupid_bench_{uuid.uuid4().hex[:6]}"
    receiver, port = start_receiver()
    config_dir = Path(home) / "configs"
    config_dir.mkdir()
    config_path = write_config(config_dir, name, port)
    try:
        t = time.perf_counter()
        build(name, args.rows)
        print(f"built {args.rows:,} source rows and the 1%-divergent destination in {time.perf_counter() - t:.1f} s")
        if args.gap_every:
            punch_gaps(name, args.gap_every)
            print(f"deleted every {args.gap_every}th source id: {100 / args.gap_every:g}% id gaps")

        b = cupid_go(name, args.sample, args.rows)
        print(f"(b) cupid-go algorithm, {args.sample:,}-row sample: {b:,.0f} rows/s "
              f"-> {args.rows / b:,.0f} s for {args.rows:,} rows")  # fmt: skip
        c, reads, lookups = floor(name, args.rows)
        print(f"(c) database floor (same reads + IN lookups, no processing): {c:,.0f} rows/s "
              f"(source reads {reads:,.0f} rows/s in {CHUNK:,}-row partitions; "
              f"key lookups {lookups:,.0f} rows/s)")  # fmt: skip

        probe = subprocess.run(
            [sys.executable, __file__, "--child", str(config_path), str(args.rows), str(CHUNK)],
            capture_output=True, text=True, check=True, env=os.environ,
        )  # fmt: skip
        child = json.loads(probe.stdout.strip().splitlines()[-1])
        print(f"(a) compare path alone: {child['rate']:,.0f} rows/s, {child['events']:,} events "
              f"-> {child['rate'] / c:.2f}x the floor (target >= 0.9x)")  # fmt: skip
        gap_s, gaps = gap_detection(config_path, args.rows)
        path_s = args.rows / child["rate"]
        print(f"    gap detection of the claim (late commits): {gap_s:.2f} s, {gaps:,} gaps kept "
              f"-> {gap_s / path_s:.1%} of the compare path's {path_s:.1f} s")  # fmt: skip
        big = subprocess.run(
            [sys.executable, __file__, "--child", str(config_path), str(args.rows), str(args.rows)],
            capture_output=True, text=True, check=True, env=os.environ,
        )  # fmt: skip
        single = json.loads(big.stdout.strip().splitlines()[-1])
        print(f"    peak memory of a compare process: {child['peak_mb']:.0f} MB with {CHUNK:,}-row partitions, "
              f"{single['peak_mb']:.0f} MB with one {args.rows:,}-row partition (target < 300 MB)")  # fmt: skip

        if not args.skip_e2e:
            subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True, check=True
            )
            a, state, delivered = end_to_end(config_dir, f"cupid_{name}", args.rows, port)
            print(f"(a) end to end, dag.test() of the factory DAG ({state}, {delivered:,} callbacks delivered): "
                  f"{a:,.0f} rows/s -> {a / b:.1f}x cupid-go (target >= 15x)")  # fmt: skip
    finally:
        receiver.terminate()
        drop(name)


if __name__ == "__main__":
    main()
