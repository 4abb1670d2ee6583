"""What a fleet of idle pairs costs on one deployment, timetable against watching, and the
detection latency with 200 watched pairs (issue: idle cost of the source watcher).

    python bench/fleet.py [--pairs 50,200] [--window 180] [--timetable-max 50] [--rows 10] [--quick]
                          [--run-first-passes] [--keep]

Starts one real deployment (``tests/stack.py``: scheduler, dag-processor, triggerer, api-server on
LocalExecutor with a throwaway PostgreSQL metadata database), with Airflow's default 30 s
``min_file_process_interval`` instead of the test stack's 5 s, and a MariaDB source and
destination database holding one small table pair per config (10 identical rows). Then, in one run:

  1. baseline: no configs; CPU of the deployment over ``--window`` seconds;
  2. timetable mode: N pairs with ``"watch": false`` (one run per pair every 60 s), all idle,
     after every DAG's first run; CPU over the window; then paused and removed. Only for
     N <= ``--timetable-max``: 200 pairs each running every minute saturate a 2-core box;
  3. watch mode (the default): N pairs, all idle, after every pair's first pass; CPU over
     the window, for each N (the fleet grows from one N to the next);
  4. detection latency with the largest watched fleet: ``--rows`` divergent rows (in a random
     pair's source, absent from its destination) inserted at random moments; time from the
     INSERT's commit to its callback's arrival, p50 and max.

Each new DAG's first run (the run of its latest schedule interval, for both modes: a watcher's
first look only records what it sees) is marked successful through the REST API
rather than run, unless ``--run-first-passes``: on a shared 2-core box 200 pairs' first passes
take longer than the whole benchmark, and they are not idle cost. Later runs all run.

CPU is counted from /proc: every process whose environment carries this deployment's AIRFLOW_HOME
(as ``AirflowStack.leftover_processes`` finds them), own user+system time plus the times of the
children each has reaped, so task processes that came and went within the window count. The sum
over the processes alive at the window's end minus the same sum at its start is the deployment's
CPU in the window; divided by the wall time, cores. Reported beside it: MariaDB's server process
(the watcher's queries cost server CPU), the PostgreSQL backends of the metadata database, and
the whole machine from /proc/stat (others may be using it: a cross-check, not a figure).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.stack import DAG_PROCESSOR_ENV, PG, AirflowStack, Recorder, wait_for  # noqa: E402

CUPID_GO_SECONDS = 2.0
TARGET_IDLE_CORES = 0.2  # 200 idle watched pairs, above the deployment's baseline
TARGET_P50, TARGET_MAX = 4.0, 8.0
PARSE_INTERVAL = "30"  # Airflow's default min_file_process_interval (the test stack uses 5)
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": ""}
ROWS_PER_TABLE = 10
TABLE = "CREATE TABLE {} (id BIGINT PRIMARY KEY, number VARCHAR(32) UNIQUE, name VARCHAR(64), update_time DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3), KEY (update_time))"  # noqa: E501
TICK = os.sysconf("SC_CLK_TCK")
ACTIVE = ("queued", "running")


def pair_config(db: str, i: int, dag_id: str, watch: bool, callback_url: str) -> dict[str, Any]:
    """Pair ``i``'s config: table ``t<i>`` of ``<db>_src`` against the same in ``<db>_des``."""
    dsn = f"root:@tcp(127.0.0.1:3306)/{db}"
    config: dict[str, Any] = {
        "src": {"dsn": dsn + "_src", "table": f"t{i:03d}", "byColumn": "number", "updateColumn": "update_time"},
        "des": [
            {
                "dsn": dsn + "_des",
                "table": f"t{i:03d}",
                "columns": {"number": "number", "name": "name"},
                "byColumn": "number",
                "callbackNotification": {"url": callback_url},
                "dagId": dag_id,
            }
        ],
    }
    if not watch:
        config["watch"] = False
    return config


# ---------------------------------------------------------------------- CPU accounting


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """``(process group, own + reaped children's CPU seconds)`` of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # fields[0] is field 3 of proc(5), "state"
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return int(fields[2]), (utime + stime + cutime + cstime) / TICK


def _own_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_backends_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend connected to ``database``."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        ours = proc.info["name"] == "postgres" and database in " ".join(proc.info["cmdline"] or [])
        if ours and (cpu := _own_cpu(proc.info["pid"])) is not None:
            found[proc.info["pid"]] = cpu
    return found


def _system_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat, all but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def _mariadb_pid() -> int | None:
    import psutil

    for proc in psutil.process_iter(["pid", "name"]):
        if proc.info["name"] in ("mariadbd", "mysqld"):
            return int(proc.info["pid"])
    return None


@dataclass
class Usage:
    """CPU over one window, in cores (CPU seconds per wall second)."""

    seconds: float
    deployment: float
    components: dict[str, float]
    mariadb: float | None
    postgres: float
    system: float
    runs: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in self.components.items())
        mariadb = "n/a" if self.mariadb is None else f"{self.mariadb:.3f}"
        return (
            f"deployment {self.deployment:.3f} cores ({parts}); MariaDB {mariadb}; "
            f"metadata PostgreSQL {self.postgres:.3f}; whole machine {self.system:.3f}"
        )


class Meter:
    """Measures one window of a deployment's CPU (see the module docstring)."""

    def __init__(self, stack: AirflowStack) -> None:
        self.stack = stack
        self.mariadb = _mariadb_pid()

    def _deployment(self) -> dict[str, float]:
        """CPU seconds so far per component: every process of the deployment, own + reaped children.

        A process belongs to the component it descends from. The environment test of
        ``AirflowStack.leftover_processes`` alone misses some: setproctitle overwrites
        /proc/<pid>/environ of the LocalExecutor's workers and of the api-server."""
        import psutil

        components = {proc.pid: name for name, proc in self.stack.procs.items()}
        marker = str(self.stack.home)
        parents: dict[int, int] = {}
        for proc in psutil.process_iter(["pid", "ppid"]):
            parents[proc.info["pid"]] = proc.info["ppid"] or 0

        def component(pid: int) -> str | None:
            seen = 0
            while pid > 1 and seen < 64:
                if pid in components:
                    return components[pid]
                pid, seen = parents.get(pid, 0), seen + 1
            return None

        totals = dict.fromkeys(self.stack.procs, 0.0)
        totals["other"] = 0.0
        for pid in parents:
            name = component(pid)
            if name is None:
                try:
                    if psutil.Process(pid).environ().get("AIRFLOW_HOME") != marker:
                        continue
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                name = "other"  # an orphan of the deployment, re-parented away from its component
            if (stat := _proc_stat(pid)) is not None:
                totals[name] += stat[1]
        return totals

    def _postgres(self) -> dict[int, float]:
        return postgres_backends_cpu(self.stack.database)

    def measure(self, seconds: float) -> Usage:
        """Sleep ``seconds`` while counting; PostgreSQL backends are sampled every 2 s (a backend
        that exits within the window loses at most its last 2 s; Airflow keeps its connections)."""
        pg_first = self._postgres()
        pg_last = dict(pg_first)
        maria0 = _own_cpu(self.mariadb) if self.mariadb else None
        dep0 = self._deployment()
        sys0, t0 = _system_busy(), time.monotonic()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(2):
                for pid, cpu in self._postgres().items():
                    pg_first.setdefault(pid, 0.0)  # started within the window
                    pg_last[pid] = cpu

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(seconds)
        stop.set()
        sampler.join()
        for pid, cpu in self._postgres().items():
            pg_first.setdefault(pid, 0.0)
            pg_last[pid] = cpu
        dep1 = self._deployment()
        sys1, t1 = _system_busy(), time.monotonic()
        maria1 = _own_cpu(self.mariadb) if self.mariadb else None
        wall = t1 - t0
        components = {k: (dep1.get(k, 0.0) - dep0.get(k, 0.0)) / wall for k in dep0 | dep1}
        if abs(components.get("other", 0.0)) < 0.0005:
            components.pop("other", None)
        return Usage(
            seconds=wall,
            deployment=sum(components.values()),
            components=components,
            mariadb=None if maria0 is None or maria1 is None else (maria1 - maria0) / wall,
            postgres=sum(pg_last[p] - pg_first[p] for p in pg_last) / wall,
            system=(sys1 - sys0) / wall,
        )


# ---------------------------------------------------------------------- the fleet


class Fleet:
    """The MariaDB tables, the config files and the metadata-database queries of the benchmark."""

    def __init__(self, stack: AirflowStack, receiver: Recorder, db: str, cursor: Any) -> None:
        self.stack, self.receiver, self.db, self.cursor = stack, receiver, db, cursor
        self._meta: Any = None
        self.latency_ids = iter(range(1_000, 1_000_000))

    def meta(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        if self._meta is None:
            self._meta = psycopg2.connect(dbname=self.stack.database, **PG)
            self._meta.autocommit = True
        with self._meta.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def close(self) -> None:
        if self._meta is not None:
            self._meta.close()

    def tables(self, n: int) -> None:
        rows = ", ".join(f"({i}, 'n{i}', 'name {i}')" for i in range(1, ROWS_PER_TABLE + 1))
        for side in ("src", "des"):
            for i in range(n):
                self.cursor.execute(TABLE.format(f"{self.db}_{side}.t{i:03d}"))
                self.cursor.execute(f"INSERT INTO {self.db}_{side}.t{i:03d} (id, number, name) VALUES {rows}")

    def config(self, i: int, dag_id: str, watch: bool) -> dict[str, Any]:
        return pair_config(self.db, i, dag_id, watch, f"{self.receiver.url}/cb")

    def write(self, prefix: str, pairs: range, watch: bool) -> None:
        """Write the configs at once: each to a hidden name, then renamed, so no parse sees half a file."""
        for i in pairs:
            dag_id = f"{prefix}{i:03d}"
            tmp = self.stack.configs / f".{dag_id}.json.tmp"
            tmp.write_text(json.dumps(self.config(i, dag_id, watch)))
            tmp.rename(self.stack.configs / f"{dag_id}.json")

    def remove(self, prefix: str) -> None:
        for path in self.stack.configs.glob(f"{prefix}*.json"):
            path.unlink()

    # metadata database

    def stages(self, dag_id: str, inserted: float) -> str:
        """Where a detected row's time went, from the metadata database: seconds after the INSERT at
        which the watcher's asset event was written, the run was queued, its scan was queued and
        started (the callback follows inside the scan)."""
        rows = self.meta(
            "SELECT min(ae.timestamp), dr.queued_at, ti.queued_dttm, ti.start_date FROM dag_run dr "
            "JOIN task_instance ti ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id AND ti.task_id = 'scan' "
            "LEFT JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id "
            "LEFT JOIN asset_event ae ON ae.id = dae.event_id "
            "WHERE dr.dag_id = %s AND dr.run_type = 'asset_triggered' "
            "GROUP BY dr.id, dr.queued_at, ti.queued_dttm, ti.start_date ORDER BY dr.id DESC LIMIT 1",
            dag_id,
        )
        if not rows:
            return "no asset-triggered run found"
        names = ("event", "run queued", "scan queued", "scan started")
        return ", ".join(
            f"{name} +{moment.timestamp() - inserted:.1f}"
            for name, moment in zip(names, rows[0], strict=True)
            if moment
        )

    def registered(self, prefix: str) -> int:
        return int(self.meta("SELECT count(*) FROM dag WHERE dag_id LIKE %s AND NOT is_stale", prefix + "%")[0][0])

    def run_states(self, prefix: str) -> dict[str, int]:
        rows = self.meta("SELECT state, count(*) FROM dag_run WHERE dag_id LIKE %s GROUP BY state", prefix + "%")
        return {str(state): int(n) for state, n in rows}

    def runs_between(self, prefix: str, start: float, end: float) -> dict[str, int]:
        """Runs of the fleet that started within [start, end] (epoch seconds), per run type."""
        rows = self.meta(
            "SELECT run_type, count(*) FROM dag_run WHERE dag_id LIKE %s "
            "AND start_date >= to_timestamp(%s) AND start_date <= to_timestamp(%s) GROUP BY run_type",
            prefix + "%",
            start,
            end,
        )
        return {str(t): int(n) for t, n in rows}

    def triggers(self) -> int:
        return int(self.meta("SELECT count(*) FROM trigger")[0][0])

    # waits

    def wait_registered(self, prefix: str, n: int, timeout: float) -> None:
        def check() -> bool:
            self._alive()
            return self.registered(prefix) >= n

        wait_for(check, timeout, f"{n} DAGs {prefix}* to be registered", every=2)

    def wait_first_runs(self, prefix: str, pairs: range, timeout: float, run_type: str | None, mark: bool) -> int:
        """Until each DAG of ``pairs`` has a successful run (of ``run_type``, and then no run of
        the fleet is queued or running); a failed run is an error. With ``mark``, their runs are
        marked successful through the REST API instead of being run (their tasks do not run).
        Returns how many runs were marked."""
        last, marked = [0.0], [0]
        ids = [f"{prefix}{i:03d}" for i in pairs]

        def check() -> bool:
            self._alive()
            if mark:
                for dag_id, run_id in self.meta(
                    "SELECT dag_id, run_id FROM dag_run WHERE dag_id = ANY(%s) AND state IN ('queued', 'running')", ids
                ):
                    path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
                    try:
                        self.stack.api(path, "PATCH", {"state": "success"})
                        marked[0] += 1
                    except urllib.error.HTTPError as e:  # a deadlock with the scheduler: the next check retries
                        print(f"    marking run {run_id} of {dag_id} failed: {e}; trying again", flush=True)
            states = self.run_states(prefix)
            if states.get("failed"):
                raise RuntimeError(f"{states['failed']} run(s) of {prefix}* failed: {states}")
            sql = "SELECT count(DISTINCT dag_id) FROM dag_run WHERE dag_id = ANY(%s) AND state = 'success'"
            params: list[Any] = [ids]
            if run_type is not None:
                sql, params = sql + " AND run_type = %s", [ids, run_type]
            done = int(self.meta(sql, *params)[0][0])
            active = sum(states.get(s, 0) for s in ACTIVE)
            if time.monotonic() - last[0] > 30:
                print(f"    {done}/{len(ids)} DAGs past their first run; runs {states}", flush=True)
                last[0] = time.monotonic()
            return done >= len(ids) and not (run_type is not None and active)

        wait_for(check, timeout, f"the first runs of {prefix}*", every=3)
        return marked[0]

    def stop_runs(self, prefix: str) -> None:
        """Mark the fleet's unfinished runs failed (best effort: a paused DAG's runs are not
        scheduled any more anyway); their running tasks are told to stop at their next heartbeat."""
        for dag_id, run_id in self.meta(
            "SELECT dag_id, run_id FROM dag_run WHERE dag_id LIKE %s AND state IN ('queued', 'running')", prefix + "%"
        ):
            path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            for attempt in (1, 2, 3):
                try:  # the API answers 500 when its update meets the scheduler's (a deadlock)
                    self.stack.api(path, "PATCH", {"state": "failed"})
                    break
                except urllib.error.HTTPError as e:
                    if attempt == 3:
                        print(f"    could not stop run {run_id} of {dag_id}: {e}; its DAG is paused", flush=True)
                    time.sleep(1)

    def wait_quiet(self, prefix: str, timeout: float) -> None:
        """Until no task of the fleet is queued or running."""

        def check() -> bool:
            self._alive()
            rows = self.meta(
                "SELECT count(*) FROM task_instance WHERE dag_id LIKE %s AND state IN ('queued', 'running')",
                prefix + "%",
            )
            return not rows[0][0]

        wait_for(check, timeout, f"the tasks of {prefix}* to end", every=2)

    def _alive(self) -> None:
        if dead := self.stack.dead_components():
            raise RuntimeError(f"component(s) exited: {dead}\n{self.stack.log_tail()}")


# ---------------------------------------------------------------------- main


@contextmanager
def mariadb_databases(db: str) -> Iterator[Any]:
    import MySQLdb

    conn = MySQLdb.connect(**MYSQL, autocommit=True)
    cursor = conn.cursor()
    try:
        for side in ("src", "des"):
            cursor.execute(f"CREATE DATABASE {db}_{side}")
        yield cursor
    finally:
        for side in ("src", "des"):
            cursor.execute(f"DROP DATABASE IF EXISTS {db}_{side}")
        conn.close()


def triggerer_health(stack: AirflowStack) -> str:
    log = stack.home / "component-logs" / "triggerer.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    watch = [line for line in lines if "cupid watch" in line]
    starting = sum("starting a run" in line for line in watch)
    problems = [line for line in lines if any(w in line for w in ("ERROR", "Traceback", "failed", "WARNING"))]
    text = (
        f"triggerer log: {len(watch)} 'cupid watch' lines ({starting} 'starting a run'), "
        f"{len(problems)} warning/error lines"
    )
    if problems:
        text += "\n" + "\n".join(f"    {line[:300]}" for line in problems[:10])
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="50,200", help="fleet sizes, comma-separated (default 50,200)")
    parser.add_argument("--window", type=float, default=180, help="seconds of each CPU measurement (default 180)")
    parser.add_argument(
        "--timetable-max", type=int, default=50, help="timetable mode only for fleets up to this size (default 50)"
    )
    parser.add_argument("--rows", type=int, default=10, help="divergent rows for the latency figure (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 pairs, 60 s windows, 3 rows")
    parser.add_argument(
        "--run-first-passes",
        action="store_true",
        help="run each new DAG's first run instead of marking it successful",
    )
    parser.add_argument("--keep", action="store_true", help="keep the deployment's home (logs) in /tmp")
    parser.add_argument(
        "--parse-interval",
        default=PARSE_INTERVAL,
        help=f"the dag-processor's min_file_process_interval in seconds (default {PARSE_INTERVAL}, Airflow's)",
    )
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.window, args.rows, args.timetable_max = "20", 60.0, 3, 20
    sizes = sorted({int(n) for n in args.pairs.split(",")})
    timetable_sizes = [n for n in sizes if n <= args.timetable_max]
    skipped = [n for n in sizes if n > args.timetable_max]

    db = f"cupid_fleet_{uuid.uuid4().hex[:8]}"
    receiver = Recorder().start()
    home = Path(tempfile.mkdtemp(prefix="cupid-fleet-", dir="/tmp"))
    stack = AirflowStack(
        home,
        extra_env={"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(args.parse_interval)},
        component_env={"dag-processor": DAG_PROCESSOR_ENV},  # as docker-compose.yaml runs it
    )
    results: dict[str, Usage] = {}
    latencies: list[float] = []
    health = ""
    started = time.monotonic()
    ok = False
    try:
        with mariadb_databases(db) as cursor:
            fleet = Fleet(stack, receiver, db, cursor)
            try:
                fleet.tables(max(sizes))
                stack.start()
                meter = Meter(stack)
                print(f"deployment up ({stack.url}, home {home}); MariaDB pid {meter.mariadb}", flush=True)
                print(
                    f"min_file_process_interval {args.parse_interval} s, parallelism "
                    f"{stack.env['AIRFLOW__CORE__PARALLELISM']}; windows of {args.window:.0f} s",
                    flush=True,
                )

                def window(key: str, prefix: str | None) -> None:
                    wall0 = time.time()
                    usage = meter.measure(args.window)
                    if prefix is not None:
                        usage.runs = fleet.runs_between(prefix, wall0, time.time())
                    results[key] = usage
                    runs = f"; runs started in the window: {usage.runs or 'none'}" if prefix else ""
                    print(f"  {key}: {usage.line()}{runs}", flush=True)

                time.sleep(30)  # the components' start-up is not idle cost
                print("baseline (no configs):", flush=True)
                window("baseline", None)

                for n in timetable_sizes:
                    print(f"timetable mode, {n} pairs (watch: false, every 60 s):", flush=True)
                    fleet.write("fleet_t_", range(n), watch=False)
                    fleet.wait_registered("fleet_t_", n, 300)
                    marked = fleet.wait_first_runs("fleet_t_", range(n), 900, None, mark=not args.run_first_passes)
                    print(f"  first runs done ({marked} marked successful, not run)", flush=True)
                    window(f"timetable {n}", "fleet_t_")
                    for i in range(n):
                        stack.api(f"dags/fleet_t_{i:03d}", "PATCH", {"is_paused": True})
                    fleet.remove("fleet_t_")
                    fleet.stop_runs("fleet_t_")
                    fleet.wait_quiet("fleet_t_", 300)
                    wait_for(lambda: fleet.registered("fleet_t_") == 0, 300, "the timetable DAGs to go", every=2)
                    print(f"  paused and removed; runs of the whole phase: {fleet.run_states('fleet_t_')}", flush=True)

                have = 0
                for n in sizes:
                    print(f"watch mode, {n} pairs (default: watcher + 6-hourly safety schedule):", flush=True)
                    have_before, have = have, n
                    fleet.write("fleet_w_", range(have_before, n), watch=True)
                    t0 = time.monotonic()
                    fleet.wait_registered("fleet_w_", n, 300)
                    marked = fleet.wait_first_runs(
                        "fleet_w_", range(have_before, n), 1500, "scheduled", mark=not args.run_first_passes
                    )
                    print(
                        f"  first passes done in {time.monotonic() - t0:.0f} s ({marked} runs marked successful, "
                        f"not run); triggers in the metadata DB: {fleet.triggers()}",
                        flush=True,
                    )
                    fleet.wait_quiet("fleet_w_", 300)  # a marked run's tasks stop at their next heartbeat
                    time.sleep(10)
                    window(f"watch {n}", "fleet_w_")

                n = max(sizes)
                print(f"detection latency with {n} watched pairs, {args.rows} rows:", flush=True)
                for k in range(args.rows):
                    time.sleep(random.uniform(1, 2 * CUPID_GO_SECONDS + 2))  # anywhere in a poll's cycle
                    i, row_id = random.randrange(n), next(fleet.latency_ids)
                    number = f"lat{row_id}"
                    cursor.execute(
                        f"INSERT INTO {db}_src.t{i:03d} (id, number, name) VALUES (%s, %s, %s)", (row_id, number, "x")
                    )
                    inserted = time.time()  # autocommit: the INSERT returned after its commit
                    wait_for(lambda v=number: v in receiver.by_value(1), 300, f"the callback for {number}", every=0.05)
                    latencies.append(receiver.arrivals[receiver.by_value(1)[number]["eventId"]] - inserted)
                    stages = fleet.stages(f"fleet_w_{i:03d}", inserted)
                    print(f"  row {k} (pair {i:03d}): {latencies[-1]:.1f} s insert->callback ({stages})", flush=True)
                health = triggerer_health(stack)
                ok = True
            finally:
                fleet.close()
                codes = stack.stop()
                stack.drop_database()
                receiver.stop()
                if not ok:
                    print(f"component exit codes: {codes}; logs kept in {home}", file=sys.stderr)
    finally:
        if ok and not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    summary(args, sizes, timetable_sizes, skipped, results, latencies, health, time.monotonic() - started)


def summary(
    args: argparse.Namespace,
    sizes: list[int],
    timetable_sizes: list[int],
    skipped: list[int],
    results: dict[str, Usage],
    latencies: list[float],
    health: str,
    elapsed: float,
) -> None:
    base = results["baseline"]
    print()
    print(f"summary (one deployment, {elapsed / 60:.0f} min; windows of {args.window:.0f} s;")
    default = ", Airflow's default" if str(args.parse_interval) == PARSE_INTERVAL else ""
    print(f"  dag-processor min_file_process_interval {args.parse_interval} s{default}, its DAG-run INFO lines off")
    print("  (as docker-compose.yaml runs it); parallelism 8;")
    if args.run_first_passes:
        print("  every new DAG's first runs were run before its window)")
    else:
        print("  new DAGs' first runs (their latest schedule interval) marked successful through the API, not run)")
    print(f"baseline, no configs: {base.line()}")
    print("cores above the baseline (deployment = all Airflow processes and their task processes):")
    above: dict[str, float] = {}
    for key, usage in results.items():
        if key == "baseline":
            continue
        above[key] = usage.deployment - base.deployment
        maria = "n/a" if usage.mariadb is None or base.mariadb is None else f"{usage.mariadb - base.mariadb:+.3f}"
        n = int(key.split()[1])
        expected = f" (a 60 s timetable asks for {n * usage.seconds / 60:.0f})" if key.startswith("timetable") else ""
        print(
            f"  {key:>13} pairs: deployment {above[key]:+.3f}, MariaDB {maria}, "
            f"metadata PostgreSQL {usage.postgres - base.postgres:+.3f}, "
            f"whole machine {usage.system - base.system:+.3f}; "
            f"runs started in the window {sum(usage.runs.values())}{expected}"
        )
    if skipped:
        print(
            f"  timetable mode not run for {', '.join(map(str, skipped))} pairs (--timetable-max "
            f"{args.timetable_max}): every pair running every 60 s saturates the 2-core box"
        )
    low = min(sizes)
    if f"timetable {low}" in above and f"watch {low}" in above:
        t, w = above[f"timetable {low}"], above[f"watch {low}"]
        ratio = f"{t / w:.1f}x" if w > 0.001 else "n/a (watch mode within noise of the baseline)"
        print(f"timetable / watch at {low} pairs: {t:.3f} / {w:.3f} cores = {ratio}")
    if latencies:
        p50, worst = statistics.median(latencies), max(latencies)
        print(
            f"detection latency with {max(sizes)} watched pairs over {len(latencies)} rows: "
            f"p50 {p50:.1f} s, max {worst:.1f} s"
        )
        print(
            f"  against cupid-go's {CUPID_GO_SECONDS:.0f} s polling: p50 {p50 / CUPID_GO_SECONDS:.1f}x, "
            f"max {worst / CUPID_GO_SECONDS:.1f}x"
        )
        print(
            f"  against the targets (p50 <= {TARGET_P50:.0f} s, max <= {TARGET_MAX:.0f} s): "
            f"p50 {p50 / TARGET_P50:.1f}x ({'met' if p50 <= TARGET_P50 else 'missed'}), "
            f"max {worst / TARGET_MAX:.1f}x ({'met' if worst <= TARGET_MAX else 'missed'})"
        )
    if "watch 200" in above:
        w = above["watch 200"]
        maria = results["watch 200"].mariadb
        with_maria = w + (maria - base.mariadb) if maria is not None and base.mariadb is not None else None
        print(
            f"target: 200 idle watched pairs < {TARGET_IDLE_CORES} cores above the baseline: "
            f"{w:.3f} cores = {w / TARGET_IDLE_CORES:.1f}x the target ({'met' if w < TARGET_IDLE_CORES else 'missed'})"
            + (f"; with MariaDB's share {with_maria:.3f} = {with_maria / TARGET_IDLE_CORES:.1f}x" if with_maria else "")
        )
    print(health)


if __name__ == "__main__":
    main()
