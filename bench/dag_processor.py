"""What the dag-processor costs per parse of ``dags/cupid_dags.py`` with N configs, split between
the parsing child (imports the DAG file, serializes every DAG) and the manager (decodes the
result, writes it to the metadata database: DAG rows, serialized DAGs, assets, watcher triggers).

    python bench/dag_processor.py [--pairs 200] [--parses 4] [--interval 30] [--modes watch,timetable]
                                  [--py-spy SECONDS] [--env KEY=VALUE ...]

Starts only ``airflow dag-processor`` (the ``tests/stack.py`` environment: a throwaway PostgreSQL
metadata database on 127.0.0.1:5432) with ``min_file_process_interval`` ``--interval`` seconds and
N configs written like ``bench/fleet.py`` writes them (one destination each; no source database is
needed: parsing opens none). No scheduler or triggerer runs, so no DAG run adds noise; the DAGs are
not paused (as in a deployment), so their watch assets are active and the manager syncs their
watcher triggers at every parse, as it does in a real one.

For each mode, after the DAGs are registered and two more parses settled, CPU is read from /proc
over ``--parses`` whole parse cycles (from one parse's commit of ``last_parsed_time`` to a later
one's): the manager's own user+system time and the time of the children it reaped (one parsing
child per parse). ``--py-spy`` also samples the dag-processor and its children for that many
seconds (py-spy must be installed: ``pip install py-spy``) and prints the top functions.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.fleet import pair_config  # noqa: E402
from tests.stack import PG, AirflowStack, wait_for  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def write_configs(folder: Path, n: int, watch: bool) -> None:
    """``bench/fleet.py``'s configs: one source and one destination table each (never opened)."""
    for path in folder.glob("*.json"):
        path.unlink()
    for i in range(n):
        dag_id = f"fleet_{'w' if watch else 't'}_{i:03d}"
        config = pair_config("cupid_bench_nowhere", i, dag_id, watch, "http://127.0.0.1:9/cb")
        tmp = folder / f".{dag_id}.json.tmp"
        tmp.write_text(json.dumps(config))
        tmp.rename(folder / f"{dag_id}.json")


def cpu(pid: int) -> tuple[float, float]:
    """``(own, reaped children)`` CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


class Meta:
    def __init__(self, database: str) -> None:
        import psycopg2

        self.conn = psycopg2.connect(dbname=database, **PG)
        self.conn.autocommit = True

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())


def registered(meta: Meta, prefix: str) -> int:
    return int(meta.query("SELECT count(*) FROM dag WHERE dag_id LIKE %s AND NOT is_stale", prefix + "%")[0][0])


def last_parsed(meta: Meta, prefix: str) -> Any:
    rows = meta.query("SELECT max(last_parsed_time) FROM dag WHERE dag_id LIKE %s AND NOT is_stale", prefix + "%")
    return rows[0][0]


def py_spy(pid: int, seconds: int, out: Path) -> None:
    spy = Path(sys.executable).parent / "py-spy"
    subprocess.run(
        [str(spy), "record", "--pid", str(pid), "--subprocesses", "--duration", str(seconds), "--rate", "50",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        check=True, capture_output=True,
    )  # fmt: skip


def _frame(frame: str) -> str:
    """``function (file.py)`` of a py-spy raw frame ``function (path/file.py:line)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})"


def spy_report(raw: Path, manager: int, top: int = 25) -> None:
    """Self and inclusive samples per function, manager and children apart."""
    own: dict[str, collections.Counter[str]] = {"manager": collections.Counter(), "child": collections.Counter()}
    incl: dict[str, collections.Counter[str]] = {"manager": collections.Counter(), "child": collections.Counter()}
    total = collections.Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        who = "child" if any(f.startswith("_fork_main ") for f in frames) else "manager"
        n = int(count)
        total[who] += n
        funcs = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
            for f in frames[1:]
            if " (" in f
        ]
        if not funcs:
            continue
        own[who][funcs[-1]] += n
        for f in set(funcs):
            incl[who][f] += n
    for who in ("child", "manager"):
        print(f"  py-spy {who}: {total[who]} samples")
        print("    inclusive:")
        for f, n in incl[who].most_common(top):
            print(f"      {100 * n / max(1, total[who]):5.1f}%  {f}")
        print("    self:")
        for f, n in own[who].most_common(top):
            print(f"      {100 * n / max(1, total[who]):5.1f}%  {f}")


def measure(meta: Meta, manager: int, prefix: str, parses: int) -> dict[str, float]:
    """CPU from the end of one parse (its DAGs' commit) to the end of the ``parses``-th after it:
    whole cycles, each one parsing child (reaped before its result is written) and one write."""

    def next_parse(seen: Any) -> Any:
        return wait_for(lambda: (v := last_parsed(meta, prefix)) != seen and v, 900, "a parse to end", every=0.1)

    seen = next_parse(last_parsed(meta, prefix))
    own0, kids0 = cpu(manager)
    t0 = time.monotonic()
    for _ in range(parses):
        seen = next_parse(seen)
    own1, kids1 = cpu(manager)
    return {"wall": time.monotonic() - t0, "parses": parses, "manager": own1 - own0, "children": kids1 - kids0}


def idle_rate(meta: Meta, manager: int, prefix: str) -> float:
    """The manager's CPU per second between parses (its loop: heartbeat, queue checks)."""
    seen = last_parsed(meta, prefix)
    wait_for(lambda: last_parsed(meta, prefix) != seen, 900, "a parse to end", every=0.1)
    time.sleep(1)
    own0, t0 = cpu(manager)[0], time.monotonic()
    time.sleep(10)
    return (cpu(manager)[0] - own0) / (time.monotonic() - t0)


def pickup(stack: AirflowStack, meta: Meta, prefix: str, watch: bool) -> None:
    """A new config, written right after a parse ended: seconds until its DAG is registered,
    without and then with a touch of the DAG file (``file_parsing_sort_mode = modified_time``
    re-parses a DAG file modified since its last parse at once)."""
    from datetime import UTC, datetime

    for touch in (False, True):
        dag_id = f"{prefix}new_{'touch' if touch else 'plain'}"
        seen = last_parsed(meta, prefix)
        wait_for(lambda s=seen: last_parsed(meta, prefix) != s, 900, "a parse to end", every=0.1)
        time.sleep(2)
        folder = Path(tempfile.mkdtemp())
        write_configs(folder, 1, watch)
        text = (next(folder.glob("*.json"))).read_text().replace(f"{prefix}000", dag_id)
        shutil.rmtree(folder)
        t0 = time.monotonic()
        (stack.configs / f"{dag_id}.json").write_text(text)
        if touch:
            os.utime(stack.dags_folder / "cupid_dags.py")
        wait_for(
            lambda d=dag_id: meta.query("SELECT count(*) FROM dag WHERE dag_id = %s AND NOT is_stale", d)[0][0],
            900, f"{dag_id} to be registered", every=0.2,
        )  # fmt: skip
        print(
            f"  a new config {'with' if touch else 'without'} touching the DAG file: registered after "
            f"{time.monotonic() - t0:.1f} s ({datetime.now(UTC):%H:%M:%S})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--parses", type=int, default=4, help="parses measured per mode (default 4)")
    parser.add_argument("--interval", default="30", help="min_file_process_interval (default 30, Airflow's)")
    parser.add_argument("--modes", default="watch,timetable")
    parser.add_argument("--py-spy", type=int, default=0, help="also sample with py-spy for this many seconds")
    parser.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the dag-processor")
    parser.add_argument(
        "--pickup",
        action="store_true",
        help="then time how long a new config takes to appear, with and without touching the DAG file after writing it",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    extra = dict(e.split("=", 1) for e in args.env)
    extra.setdefault("AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL", args.interval)
    extra.setdefault("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "300")

    home = Path(tempfile.mkdtemp(prefix="cupid-dagproc-", dir="/tmp"))
    stack = AirflowStack(home, extra_env=extra)
    stack.configs.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "cupid_dags.py", stack.dags_folder / "cupid_dags.py")
    (home / "component-logs").mkdir()
    from tests.stack import pg_admin

    pg_admin(f'CREATE DATABASE "{stack.database}"')
    try:
        stack.cli("db", "migrate", timeout=600)
        meta = Meta(stack.database)
        results = {}
        for mode in args.modes.split(","):
            watch = mode == "watch"
            prefix = f"fleet_{'w' if watch else 't'}_"
            write_configs(stack.configs, args.pairs, watch)
            stack.start_component("dag-processor")
            manager = stack.procs["dag-processor"].pid
            wait_for(lambda p=prefix: registered(meta, p) >= args.pairs, 600, "the DAGs to be registered", every=1)
            triggers = meta.query("SELECT count(*) FROM trigger")[0][0]
            for _ in range(1):  # settle: the writes of the first parse
                seen = last_parsed(meta, prefix)
                wait_for(lambda s=seen, p=prefix: last_parsed(meta, p) != s, 600, "a parse", every=0.5)
            r = measure(meta, manager, prefix, args.parses)
            r["idle"] = idle_rate(meta, manager, prefix)
            results[mode] = r
            per = max(1, r["parses"])
            print(
                f"{mode} {args.pairs}: {r['parses']} parses in {r['wall']:.0f} s; per parse: child "
                f"{r['children'] / per:.2f} CPU-s, manager {r['manager'] / per:.2f} CPU-s, total "
                f"{(r['children'] + r['manager']) / per:.2f}; cycle {r['wall'] / per:.1f} s, "
                f"{(r['children'] + r['manager']) / r['wall']:.3f} cores (manager idle between parses "
                f"{r['idle']:.4f} cores); triggers {triggers}; serialized_dag rows "
                f"{meta.query('SELECT count(*) FROM serialized_dag')[0][0]}, dag_version rows "
                f"{meta.query('SELECT count(*) FROM dag_version')[0][0]}",
                flush=True,
            )
            if args.pickup:
                pickup(stack, meta, prefix, watch)
            if args.py_spy:
                raw = home / f"py-spy-{mode}.txt"
                py_spy(manager, args.py_spy, raw)
                spy_report(raw, manager)
            stack.stop_component("dag-processor")
            meta.query("UPDATE dag SET is_stale = true WHERE dag_id LIKE %s RETURNING 1", prefix + "%")
    finally:
        for proc in list(stack.procs.values()):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        stack.procs.clear()
        with contextlib.suppress(Exception):
            meta.conn.close()
        stack.drop_database()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"kept {home}")


if __name__ == "__main__":
    main()
