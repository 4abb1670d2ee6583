"""A first pass bigger than one run, under CeleryExecutor with two workers against one (issue 13, item 3).

    python bench/celery_scale.py [--rows 5000000] [--concurrency 2] [--workers 2,1] [--max-rows-per-run N]

Builds one ``--rows`` source table and a 1%-divergent destination (``scan_compare.build``: 0.5%
missing, 0.5% changed, checked with one anti-join before anything is timed), shared by every
measurement and dropped at the end, also on an error or Ctrl-C. Then:

  1. the in-process baseline: ``scan_compare.compare_path`` on the same tables in a child process,
     the "compare path alone" figure of ``make bench-scan`` (partitioning and every partition's
     compare; no Airflow, no callbacks);
  2. for each ``--workers`` entry, a fresh deployment (``tests/stack.py``: scheduler,
     dag-processor, triggerer, api-server, Redis broker, one ``airflow celery worker`` per worker,
     each with ``--concurrency`` pool slots; 20 s are left for its start-up to settle) and a
     fresh insert cursor: one new watched pair (the defaults but ``inlineRows`` 0: the default
     ``chunkSize`` and ``maxRowsPerRun``) whose first pass drains the whole table, as a user's
     would, with nobody triggering anything. Run 1 is the run Airflow creates for the new DAG's
     safety schedule; a run whose claim stops short of the source's ``MAX(id)`` queues the next
     itself (an event of the pair's watch asset), which waits behind it
     (``max_active_runs=1``): the runs follow each other and never overlap (checked from their
     start and end dates) until the cursor (the Variable ``cupid.<dag_id>.insert_cursor``, read
     through the REST API) reaches ``MAX(id)``. Wall time is from run 1's queued time to the
     last run's end, as the REST API reports them.

Memory: every ~0.2 s a thread walks each worker's process tree (``/proc/<pid>/task/*/children``
from the ``airflow celery worker`` process the stack started; setproctitle overwrites the
environment of the celery processes, so ``CUPID_TEST_COMPONENT`` cannot be read from them) and
reads each process's ``VmHWM``, the kernel's peak-RSS high-water mark, so a peak between two polls
is not missed (only a process that lives less than a poll is). Kinds, by place in the tree: the
celery main process, its log server (``serve-logs``), its stale-bundle cleanup process, its pool
children (each is the task supervisor of the tasks it runs: Airflow 3.3's Celery executor
supervises in the pool process) and the task processes the supervisors fork (``airflow worker --
<ti id>``, matched to their task through the REST API). A task process is forked from its
supervisor, so its RSS counts the pages it shares with it. A worker's total is the sum of its
processes' ``VmRSS`` at the poll where it is highest (shared pages counted in every process that
maps them), and the sum of their ``Pss`` (each shared page split among its sharers) sampled every
second.

CPU over the pass is counted too (:class:`CpuMeter`: the machine, this deployment, MariaDB, its
metadata PostgreSQL, this bench), so that other users of the machine show up as "everything else".

Needs MariaDB on 127.0.0.1:3306 (SEQUENCE engine), PostgreSQL on 127.0.0.1:5432 and Redis on
127.0.0.1:6379, as the end-to-end tests do. Prints each run, a summary table, the ratios and the
peak memory per process kind; asserts that every divergence arrived (distinct event ids at the
receiver), that no run failed and that partitions per run stay under Airflow's
``[core] max_map_length`` and cupid's own cap.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.request import urlopen

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from fleet import _mariadb_pid, _own_cpu, _proc_stat, _system_busy, postgres_backends_cpu  # noqa: E402
from scan_compare import CHUNK, build, connect, drop, start_receiver, write_config  # noqa: E402

from cupid_airflow.core.partitions import MAX_PARTITIONS  # noqa: E402
from tests.stack import AirflowStack, wait_for, worker_component  # noqa: E402

WORKER_NAMES = ("a", "b", "c", "d")
POLL_SECONDS = 0.2
PSS_EVERY = 5  # polls: Pss needs smaps_rollup, a page-table walk; VmHWM and VmRSS are in /proc/<pid>/status
TARGET_TASK_MB = 300
RUN_TIMEOUT = 1800.0
SETTLE_SECONDS = 20
KINDS = (
    "celery main process",
    "log server (serve-logs)",
    "stale-bundle cleanup",
    "pool child = task supervisor",
    "task process",
    "other",
)
TI_TITLE = re.compile(r"airflow worker -- ([0-9a-f-]{36})")


# ---------------------------------------------------------------------- the tables


def divergences(name: str) -> tuple[int, int, int]:
    """``(max id, missing, changed)`` counted by SQL over the compared columns, independently of cupid."""
    conn = connect()
    cur = conn.cursor()
    cur.execute(
        f"SELECT MAX(s.id), SUM(d.number IS NULL), SUM(d.number IS NOT NULL AND NOT (s.name <=> d.name "
        f"AND s.avatar <=> d.avatar AND s.amount <=> d.amount)) "
        f"FROM `{name}_src`.`user` s LEFT JOIN `{name}_des`.`user` d ON d.number = s.number"
    )
    max_id, missing, changed = cur.fetchone()
    conn.close()
    return int(max_id), int(missing), int(changed)


def baseline(config: Path, rows: int, home: Path) -> dict[str, Any]:
    """``make bench-scan``'s "compare path alone" in a child process of its own: rate, events, peak MB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", PYTHONPATH=str(REPO))
    probe = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scan_compare.py"), "--child", str(config), str(rows), str(CHUNK)],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return dict(json.loads(probe.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------- memory of the workers


@dataclass
class Seen:
    """One process of a worker, as last polled, with the highest VmHWM read from it."""

    worker: str
    kind: str
    hwm_kb: int = 0
    ti_id: str | None = None


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (a child is listed under the thread that forked it)."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def _status(pid: int) -> tuple[int, int] | None:
    """``(VmHWM, VmRSS)`` in kB, None for a process that is gone (or a zombie: no memory left)."""
    hwm = rss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except OSError:
        return None
    return None if hwm is None or rss is None else (hwm, rss)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _pss(pid: int) -> int:
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


class MemoryMonitor:
    """Polls every worker's process tree (see the module docstring) in a thread of its own."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.procs: dict[tuple[int, str], Seen] = {}  # (pid, start time) -> what was seen of it
        self.peak_rss_kb: dict[str, int] = dict.fromkeys(roots, 0)
        self.peak_pss_kb: dict[str, int] = dict.fromkeys(roots, 0)
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def _tree(self, root: int) -> list[tuple[int, str]]:
        """``(pid, kind)`` of the worker's processes, by their place under the worker's main process
        and their title: its children are the pool (``[celeryd: …ForkPoolWorker-N]``, then ``airflow
        supervisor: …`` once they ran a task), ``serve-logs`` and the stale-bundle cleanup (which
        keeps the worker's command line); a pool child's children are task processes."""
        found = [(root, KINDS[0])]
        for child in _children(root):
            title = _read(f"/proc/{child}/cmdline")
            if "serve-logs" in title:
                kind = KINDS[1]
            elif title.startswith(("[celeryd:", "airflow supervisor:")):
                kind = KINDS[3]
            else:
                kind = KINDS[2]
            found.append((child, kind))
            found += [(grandchild, KINDS[4] if kind == KINDS[3] else KINDS[5]) for grandchild in _children(child)]
        return found

    def poll(self) -> None:
        self.polls += 1
        with_pss = self.polls % PSS_EVERY == 0
        for worker, root in self.roots.items():
            rss_total = pss_total = 0
            for pid, kind in self._tree(root):
                status = _status(pid)
                if status is None:
                    continue
                started = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()[19:20]  # field 22: start time
                seen = self.procs.setdefault((pid, "".join(started)), Seen(worker, kind))
                seen.kind = kind  # a forked log server shows its title only once it has set it
                seen.hwm_kb = max(seen.hwm_kb, status[0])
                if kind == KINDS[4] and seen.ti_id is None and (m := TI_TITLE.search(_read(f"/proc/{pid}/cmdline"))):
                    seen.ti_id = m.group(1)
                rss_total += status[1]
                if with_pss:
                    pss_total += _pss(pid)
            self.peak_rss_kb[worker] = max(self.peak_rss_kb[worker], rss_total)
            self.peak_pss_kb[worker] = max(self.peak_pss_kb[worker], pss_total)


# ---------------------------------------------------------------------- CPU, to see who else used the machine


class CpuMeter:
    """CPU over the pass, in cores: the machine (/proc/stat), this deployment's processes (own time
    plus their reaped children's, by descent from the components, as bench/fleet.py counts), its
    workers among them, MariaDB, the PostgreSQL backends of its metadata database (sampled every
    2 s: a backend that comes and goes between samples loses its share), this bench (its own
    process and the receiver's) and, the rest, everything else (Redis, other users of the machine)."""

    def __init__(self, stack: AirflowStack, receiver: int) -> None:
        self.stack, self.receiver = stack, receiver
        self.mariadb = _mariadb_pid()
        self._first: dict[str, float] = {}
        self._t0 = 0.0
        self._pg_first: dict[int, float] = {}
        self._pg_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _postgres(self) -> dict[int, float]:
        return postgres_backends_cpu(self.stack.database)

    def _sample_postgres(self) -> None:
        for pid, cpu in self._postgres().items():
            self._pg_first.setdefault(pid, 0.0)  # connected within the pass
            self._pg_last[pid] = cpu

    def _loop(self) -> None:
        while not self._stop.wait(2):
            self._sample_postgres()

    def _seconds(self) -> dict[str, float]:
        import psutil

        components = {proc.pid: name for name, proc in self.stack.procs.items()}
        parents = {p.info["pid"]: p.info["ppid"] or 0 for p in psutil.process_iter(["pid", "ppid"])}
        totals = {
            "machine": _system_busy(),
            "MariaDB": (_own_cpu(self.mariadb) or 0.0) if self.mariadb else 0.0,
            "bench": sum(_own_cpu(pid) or 0.0 for pid in (os.getpid(), self.receiver)),
            "deployment": 0.0,
            "workers": 0.0,
        }
        for pid in parents:
            up, hops = pid, 0
            while up > 1 and up not in components and hops < 64:
                up, hops = parents.get(up, 0), hops + 1
            if up in components and (stat := _proc_stat(pid)) is not None:
                totals["deployment"] += stat[1]
                if components[up].startswith("worker-"):
                    totals["workers"] += stat[1]
        return totals

    def start(self) -> CpuMeter:
        self._pg_first = self._postgres()
        self._pg_last = dict(self._pg_first)
        self._first, self._t0 = self._seconds(), time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample_postgres()
        last, wall = self._seconds(), time.monotonic() - self._t0
        cores = {k: (last[k] - self._first[k]) / wall for k in last}
        cores["PostgreSQL"] = sum(self._pg_last[p] - self._pg_first[p] for p in self._pg_last) / wall
        cores["others"] = cores["machine"] - sum(cores[k] for k in ("deployment", "MariaDB", "PostgreSQL", "bench"))
        return cores


# ---------------------------------------------------------------------- one deployment


@dataclass
class Run:
    run_id: str
    claim: list[int]
    queued: datetime
    start: datetime
    end: datetime
    partitions: int
    hosts: dict[str, Counter[str]]  # task_id -> hostname -> task instances
    retries: int
    #: task_id -> (seconds from the run's start to its first instance's start, to its last one's end,
    #: the longest instance's own duration)
    phases: dict[str, tuple[float, float, float]]


@dataclass
class Measurement:
    workers: int
    concurrency: int
    runs: list[Run]
    wall: float
    delivered: int
    posts: int
    max_map_length: int
    memory: dict[str, tuple[int, int]]  # kind -> (peak VmHWM kB, processes)
    peak_rss_kb: dict[str, int]
    peak_pss_kb: dict[str, int]
    task_processes: int
    task_instances: int
    load_before: str
    cores: dict[str, float]  # CPU over the pass, in cores (see CpuMeter)
    notes: list[str] = field(default_factory=list)


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _claims(stack: AirflowStack, dag_id: str) -> tuple[int | None, dict[str, list[int]]]:
    text = stack.variable(f"cupid.{dag_id}.insert_cursor")
    if text is None:
        return None, {}
    state = json.loads(text)
    return state.get("cursor"), {str(k): [int(v[0]), int(v[1])] for k, v in (state.get("claims") or {}).items()}


def drain(stack: AirflowStack, dag_id: str, max_id: int) -> list[str]:
    """Run ids of the pass, in order. Nobody triggers anything: run 1 is the new DAG's first run
    (its safety schedule's latest interval), and each run whose claim stops short of ``MAX(id)``
    queues the next itself (its scan adds an event of the pair's watch asset), until the cursor
    reaches ``max_id``."""
    run_ids: list[str] = []
    while True:

        def next_run(seen: int = len(run_ids)) -> str | None:
            runs = stack.runs(dag_id) if stack.dag(dag_id) else []
            return str(runs[seen]["dag_run_id"]) if len(runs) > seen else None

        run_id = wait_for(next_run, 300, f"run {len(run_ids) + 1} of {dag_id}")
        run_ids.append(run_id)
        run = stack.wait_run_done(dag_id, run_id, RUN_TIMEOUT)
        if run["state"] != "success":
            raise RuntimeError(f"run {run_id} ended {run['state']}: {_failed_tasks(stack, dag_id, run_id)}")
        _, upto = _claims(stack, dag_id)[1][run_id]
        print(f"    {run_id} ({run['run_type']}): claimed ids up to {upto:,}, {run['state']}", flush=True)
        if upto >= max_id:
            return run_ids


def _phases(tis: list[dict[str, Any]], start: datetime) -> dict[str, tuple[float, float, float]]:
    """Where a run's time went, per task: when its instances started and ended, and the longest."""
    phases: dict[str, tuple[float, float, float]] = {}
    for task_id in {ti["task_id"] for ti in tis}:
        ran = [ti for ti in tis if ti["task_id"] == task_id and ti["start_date"] and ti["end_date"]]
        if ran:
            begins = [(_when(ti["start_date"]) - start).total_seconds() for ti in ran]
            ends = [(_when(ti["end_date"]) - start).total_seconds() for ti in ran]
            phases[task_id] = (min(begins), max(ends), max(e - b for b, e in zip(begins, ends)))
    return phases


def _failed_tasks(stack: AirflowStack, dag_id: str, run_id: str) -> list[str]:
    return [
        f"{ti['task_id']}[{ti['map_index']}] {ti['state']} on {ti['hostname']}"
        for ti in stack.task_instances(dag_id, run_id)
        if ti["state"] not in ("success", "skipped")
    ]


def _pair_config(base: Path, dag_id: str, max_rows_per_run: int | None) -> dict[str, Any]:
    """``scan_compare``'s pair with this bench's settings: default chunkSize and maxRowsPerRun."""
    config = json.loads(base.read_text())
    config.pop("maxRowsPerRun")
    if max_rows_per_run is not None:
        config["maxRowsPerRun"] = max_rows_per_run
    config.pop("watch", None)  # watched, as by default: the backlog queues its own runs
    config.pop("schedule", None)
    config.update(inlineRows=0)
    config["des"][0]["dagId"] = dag_id
    return dict(config)


def measure(args: argparse.Namespace, workers: int, base_config: Path, max_id: int, expected: int) -> Measurement:
    """One fresh Celery deployment with ``workers`` workers: the first pass, end to end."""
    names = WORKER_NAMES[:workers]
    dag_id = f"cupid_celery_scale_{workers}w"
    home = Path(tempfile.mkdtemp(prefix=f"cupid-celery-scale-{workers}w-"))
    stack = AirflowStack(
        home,
        extra_env={"PYTHONPATH": str(REPO)},  # the task processes import this checkout's cupid_airflow
        celery_workers=dict.fromkeys(names, "default"),
        worker_concurrency=args.concurrency,
    )
    receiver, port = start_receiver()
    ok = False
    try:
        config = _pair_config(base_config, dag_id, args.max_rows_per_run)
        config["des"][0]["callbackNotification"]["url"] = f"127.0.0.1:{port}/cb"
        stack.start()
        time.sleep(SETTLE_SECONDS)  # the components' start-up is not part of the pass
        monitor = MemoryMonitor({n: stack.procs[worker_component(n)].pid for n in names}).start()
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"  deployment up ({len(names)} worker(s) x {args.concurrency}); load average {load}", flush=True)
        cpu = CpuMeter(stack, receiver.pid).start()
        (stack.configs / f"{dag_id}.json").write_text(json.dumps(config))
        try:
            run_ids = drain(stack, dag_id, max_id)
        finally:
            monitor.stop()
            cores = cpu.stop()
        runs: list[Run] = []
        ti_kinds: dict[str, str] = {}
        instances = 0
        claims = _claims(stack, dag_id)[1]
        for run_id in run_ids:
            run, tis = stack.run(dag_id, run_id), stack.task_instances(dag_id, run_id)
            instances += len(tis)
            hosts: dict[str, Counter[str]] = defaultdict(Counter)
            for ti in tis:
                hosts[ti["task_id"]][ti["hostname"]] += 1
                ti_kinds[ti["id"]] = ti["task_id"]
            runs.append(
                Run(
                    run_id=run_id,
                    claim=claims[run_id],
                    queued=_when(run["queued_at"]),
                    start=_when(run["start_date"]),
                    end=_when(run["end_date"]),
                    partitions=sum(1 for ti in tis if ti["task_id"] == "compare"),
                    hosts=dict(hosts),
                    retries=sum(max(0, int(ti["try_number"]) - 1) for ti in tis),
                    phases=_phases(tis, _when(run["start_date"])),
                )
            )
        for before, after in itertools.pairwise(runs):
            assert after.start >= before.end, f"runs overlap: {before.run_id} ended {before.end}, {after.run_id} began"
        memory: dict[str, tuple[int, int]] = {}
        task_processes = 0
        for seen in monitor.procs.values():
            kind = seen.kind
            if kind == KINDS[4]:
                task_processes += 1
                kind = f"task process: {ti_kinds.get(seen.ti_id or '', 'unidentified')}"
            peak, n = memory.get(kind, (0, 0))
            memory[kind] = (max(peak, seen.hwm_kb), n + 1)
        delivered = _receiver_count(port, "distinct")
        max_map_length = int(stack.cli("config", "get-value", "core", "max_map_length").strip())
        measurement = Measurement(
            workers=workers,
            concurrency=args.concurrency,
            runs=runs,
            wall=(runs[-1].end - runs[0].queued).total_seconds(),
            delivered=delivered,
            posts=_receiver_count(port, "count"),
            max_map_length=max_map_length,
            memory=memory,
            peak_rss_kb=monitor.peak_rss_kb,
            peak_pss_kb=monitor.peak_pss_kb,
            task_processes=task_processes,
            task_instances=instances,
            load_before=load,
            cores=cores,
        )
        assert delivered == expected, f"{delivered:,} distinct events received, {expected:,} divergences expected"
        for done in runs:
            assert done.partitions < min(max_map_length, MAX_PARTITIONS + 1), done
        ok = True
        return measurement
    finally:
        receiver.terminate()
        receiver.wait()
        stack.stop()
        stack.drop_database()
        if ok:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"  logs kept in {home}\n{stack.log_tail(30)}", file=sys.stderr)
        if left := stack.leftover_processes():
            print(f"  WARNING: processes left behind: {left}", file=sys.stderr)


def _receiver_count(port: int, what: str) -> int:
    with urlopen(f"http://127.0.0.1:{port}/{what}") as response:
        return int(response.read())


# ---------------------------------------------------------------------- report


def _hosts(runs: list[Run], task_id: str) -> str:
    total: Counter[str] = Counter()
    for run in runs:
        total.update(run.hosts.get(task_id, Counter()))
    return " ".join(f"{host}:{n}" for host, n in sorted(total.items())) or "-"


def print_runs(m: Measurement) -> None:
    print(f"  runs of {m.workers} worker(s), from the REST API; per task: its instances per host, when the")
    print("  first started and the last ended (seconds from the run's start), the longest instance:")
    previous = None
    for run in m.runs:
        gap = f", {(run.start - previous).total_seconds():.1f} s after the previous ended" if previous else ""
        retried = f", {run.retries} retried tries" if run.retries else ""
        print(
            f"    {run.run_id}: ids ({run.claim[0]:,}, {run.claim[1]:,}], {run.partitions} partitions, "
            f"{(run.end - run.start).total_seconds():.1f} s{gap}{retried}"
        )
        print(
            "      "
            + "; ".join(
                f"{task} {_hosts([run], task)} {run.phases[task][0]:.1f}-{run.phases[task][1]:.1f} s "
                f"(longest {run.phases[task][2]:.1f})"
                for task in ("scan", "compare", "callback")
                if task in run.phases
            )
        )
        previous = run.end
    c = m.cores
    print(
        f"  CPU during the pass, in cores: machine {c['machine']:.2f} = this deployment {c['deployment']:.2f} "
        f"(its workers {c['workers']:.2f})\n    + MariaDB {c['MariaDB']:.2f} + its metadata PostgreSQL "
        f"{c['PostgreSQL']:.2f} + this bench and its receiver {c['bench']:.2f} + everything else {c['others']:.2f} "
        "(Redis, other users of the machine)"
    )


def _row(*cells: str) -> str:
    widths = (32, 8, 9, 5, 10, 18, 18, 14)
    return " ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))


def report(args: argparse.Namespace, split: tuple[int, int], base: dict[str, Any], ms: list[Measurement]) -> None:
    rows, (missing, changed) = args.rows, split
    cores = os.cpu_count()
    in_process = rows / base["rate"]
    print()
    print(f"summary: first pass over {rows:,} source rows, {missing + changed:,} divergences ({missing / rows:.1%} "
          f"missing, {changed / rows:.1%} changed);")  # fmt: skip
    per_run = "maxRowsPerRun 1,000,000 (the defaults)" if args.max_rows_per_run is None else (
        f"the default; maxRowsPerRun {args.max_rows_per_run:,}")  # fmt: skip
    print(f"  chunkSize {CHUNK:,}, {per_run}, inlineRows 0, {args.concurrency} pool slots per worker;")
    print("  wall time = first run queued -> last run ended (REST API)")
    header = ("configuration", "wall", "rows/s", "runs", "parts/run", "compare per host", "callback per host", "events")
    print("  " + _row(*header))
    cells: tuple[str, ...] = (f"{in_process:.1f}s", f"{base['rate']:,.0f}", "-", "-", "-", "-", f"{base['events']:,}")
    print("  " + _row("in process, compare path alone", *cells))
    for m in ms:
        parts = sorted({r.partitions for r in m.runs})
        cells = (f"{m.wall:.1f}s", f"{rows / m.wall:,.0f}", str(len(m.runs)), "/".join(map(str, parts)))
        hosts = (_hosts(m.runs, "compare"), _hosts(m.runs, "callback"), f"{m.delivered:,}/{m.posts:,}")
        print("  " + _row(f"celery, {m.workers} worker(s) x {m.concurrency}", *cells, *hosts))
    print("  (events: distinct event ids received / POSTs; in process: events found, none sent)")
    by_workers = {m.workers: m for m in ms}
    print("ratios (wall time):")
    if 2 in by_workers and 1 in by_workers:
        two, one = by_workers[2], by_workers[1]
        print(f"  2 workers vs 1 worker: {two.wall:.1f} s / {one.wall:.1f} s = {two.wall / one.wall:.2f} "
              f"({one.wall / two.wall:.2f}x the rows/s)")  # fmt: skip
    for m in ms:
        ratio = m.wall / in_process
        print(f"  {m.workers} worker(s) vs in process: {m.wall:.1f} s / {in_process:.1f} s = {ratio:.1f}x "
              f"({rows / m.wall / base['rate']:.0%} of the in-process rows/s)")  # fmt: skip
    print(f"  this machine has {cores} cores, shared by MariaDB, PostgreSQL, Redis, the Airflow components and every")
    print("  worker: two workers cannot be twice one here. The point is that the work spreads over both and")
    print("  that a worker's memory stays flat whatever the table size.")
    print("peak memory (VmHWM: the kernel's high-water mark of each process's RSS), max over the processes of a kind:")
    print(f"  in process, compare path alone (for reference): {base['peak_mb']:.0f} MB")
    worst = 0
    for m in ms:
        print(f"  {m.workers} worker(s), {m.task_processes} task processes seen for {m.task_instances} task instances:")
        for kind, (peak, n) in sorted(m.memory.items(), key=lambda item: (KINDS.index(item[0].split(":")[0]), item)):
            print(f"    {kind:<32} {peak / 1024:>6.0f} MB  ({n} processes)")
            if kind.startswith("task process"):
                worst = max(worst, peak)
        totals = ", ".join(
            f"{w}: RSS {m.peak_rss_kb[w] / 1024:,.0f} MB, PSS {m.peak_pss_kb[w] / 1024:,.0f} MB" for w in m.peak_rss_kb
        )
        every = POLL_SECONDS * PSS_EVERY
        print(f"    a worker's total at its peak (sum over its processes; PSS sampled every {every:.0f} s): {totals}")
    verdict = "met" if worst < TARGET_TASK_MB * 1024 else "MISSED"
    print(f"  target < {TARGET_TASK_MB} MB per task process: highest {worst / 1024:.0f} MB, {verdict}")
    for m in ms:
        print(f"  partitions per run ({m.workers} worker(s)): at most {max(r.partitions for r in m.runs)}, under "
              f"[core] max_map_length {m.max_map_length} and cupid's cap {MAX_PARTITIONS}")  # fmt: skip


# ---------------------------------------------------------------------- main


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: deployments stopped, tables dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000, help="source rows (default 5,000,000)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool slots per worker (default 2)")
    parser.add_argument("--workers", default="2,1", help="worker counts to measure, in order (default 2,1)")
    parser.add_argument(
        "--max-rows-per-run", type=int, help="the pair's maxRowsPerRun (default: cupid's, 1,000,000); for several "
        "runs on a small table"
    )  # fmt: skip
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    if not counts or not all(1 <= n <= len(WORKER_NAMES) for n in counts):
        parser.error(f"--workers: counts from 1 to {len(WORKER_NAMES)}")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    started = time.monotonic()
    name = f"cupid_celery_{uuid.uuid4().hex[:6]}"
    home = Path(tempfile.mkdtemp(prefix="cupid-celery-scale-"))
    results: list[Measurement] = []
    try:
        t = time.monotonic()
        build(name, args.rows)
        max_id, missing, changed = divergences(name)
        expected = missing + changed
        print(f"built {args.rows:,} source rows and the destination in {time.monotonic() - t:.0f} s: "
              f"{missing:,} missing, {changed:,} changed ({expected / args.rows:.2%}); source MAX(id) {max_id:,}",
              flush=True)  # fmt: skip
        assert abs(missing - args.rows / 200) <= 1 and abs(changed - args.rows / 200) <= 1, (missing, changed)
        config = write_config(home, name, 9)  # the port is replaced per deployment; the baseline sends nothing

        base = baseline(config, args.rows, home)
        print(f"in process, compare path alone: {base['rate']:,.0f} rows/s, {base['events']:,} events, "
              f"{base['peak_mb']:.0f} MB peak", flush=True)  # fmt: skip
        assert base["events"] == expected, base
        for n in counts:
            t = time.monotonic()
            print(f"celery, {n} worker(s) x {args.concurrency}:", flush=True)
            results.append(measure(args, n, config, max_id, expected))
            print_runs(results[-1])
            print(f"  {results[-1].wall:.1f} s wall; deployment started, measured and stopped in "
                  f"{time.monotonic() - t:.0f} s", flush=True)  # fmt: skip
    finally:
        drop(name)
        shutil.rmtree(home, ignore_errors=True)
    report(args, (missing, changed), base, results)
    print(f"bench total: {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
