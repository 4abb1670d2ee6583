"""What one page of the cupid view costs at fleet sizes: ``load_page`` (Airflow's metadata
database) and ``render_page`` (the HTML), cold and warm, with the SQL statements per page.

    python bench/drift_view.py [--pairs 50,200] [--runs 100] [--mapped 2] [--repeat 5] [--profile] [--keep]

Builds a throwaway PostgreSQL metadata database (127.0.0.1:5432, user postgres; migrated with
``airflow db migrate``, dropped at the end, also on failure) and, for each fleet size in turn
(the fleet grows from one size to the next):

  * writes a cupid config per pair (every 10th pair with a reconcile DAG) and two broken configs
    beside ``dags/cupid_dags.py`` in a temporary dags folder, and lets Airflow create the DAG
    rows, tags and versions (``airflow dags reserialize``);
  * inserts with SQLAlchemy Core what the scheduler and tasks would have written: ``--runs`` runs
    per pair within the last 7 days (one every 100 minutes), each with a ``scan``, ``--mapped``
    ``compare`` and as many ``callback`` task instances, each with its ``cupid_tally`` XCom (a
    JSON object, as the Execution API stores what a task pushes) and the ``return_value`` XComs
    of scan and compare; a reconcile DAG's 7 daily runs (``plan``, ``reconcile`` and ``callback``
    tasks); the pairs' ``insert_cursor`` and ``update_hwm`` Variables (encrypted, as
    ``Variable.set`` writes them). Some runs failed (a callback failed), some last runs are
    still retrying a callback or failed outright;
  * measures in a fresh process (the api-server's view of a database it did not write): the first
    page ("cold": a new connection, every statement compiled for the first time; the process's
    ORM mapper configuration and the cupid modules ``load_page`` imports on first use are paid
    once per process and timed apart) and the median of ``--repeat`` more ("warm"), each in its
    own session as the view opens one. Statements are counted with SQLAlchemy's
    ``before_cursor_execute`` event; rows and time per statement are shown for one warm page
    (``--profile``: where one more page's time goes);
  * checks the page against what was inserted: every pair, its window totals, callbacks
    delivered/waiting/failed, backlog, last run's problems, last reconcile, the broken configs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from tests.stack import PG, pg_admin  # noqa: E402  (no Airflow import: the ORM binds later)

RUN_EVERY = timedelta(minutes=100)  # 100 runs fit in the view's 7-day window
RECONCILE_EVERY = 10  # one pair in this many has a reconcile DAG
RECONCILE_RUNS = 7  # daily, within the window
BROKEN = {"broken_1.json": '{"src": {}}', "broken_2.json": '{"src": '}
TALLY_KEY = "cupid_tally"


def pair_id(i: int) -> str:
    return f"cupid_view_{i:03d}"


def pair_config(i: int) -> dict[str, Any]:
    dsn = "root:@tcp(127.0.0.1:3306)/bench_view"
    des: dict[str, Any] = {
        "dsn": dsn + "_des",
        "table": f"t{i:03d}",
        "columns": {"number": "number", "name": "name"},
        "byColumn": "number",
        "callbackNotification": {"url": "http://127.0.0.1:9/callback"},
        "dagId": pair_id(i),
    }
    if i % RECONCILE_EVERY == 0:
        des["reconcile"] = {"schedule": "@daily"}
    return {
        "src": {"dsn": dsn + "_src", "table": f"t{i:03d}", "byColumn": "number", "updateColumn": "update_time"},
        "des": [des],
    }


def airflow_env(home: Path, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CUPID_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": "HqGzPn0mqzJ6o9Xvhz0z7vFtJHcFv3lq8M4P6H4m6pU=",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{database}"
            ),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def airflow_cli(env: dict[str, str], *args: str) -> float:
    t0 = time.perf_counter()
    result = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return time.perf_counter() - t0


# ---------------------------------------------------------------------- the fleet's history


class Expected:
    """What the page must show, built beside the rows inserted."""

    def __init__(self) -> None:
        self.pairs: dict[str, dict[str, Any]] = {}
        self.tallies = 0
        self.pair_tallies = 0
        self.runs = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "tallies": self.tallies,
            "pair_tallies": self.pair_tallies,
            "runs": self.runs,
            "broken": sorted(BROKEN),
        }


class Writer:
    """Rows of the scheduler's and the tasks' making, inserted with SQLAlchemy Core in batches."""

    BATCH = 5000

    def __init__(self, session: Any, now: datetime, mapped: int, runs: int) -> None:
        from airflow.models.dag_version import DagVersion
        from sqlalchemy import func, select, text

        self.session = session
        self.now = now
        self.mapped = mapped
        self.runs = runs
        self.log_template_id = session.scalar(text("SELECT max(id) FROM log_template"))
        latest = select(DagVersion.dag_id, func.max(DagVersion.version_number).label("n")).group_by(DagVersion.dag_id)
        sub = latest.subquery()
        self.versions: dict[str, Any] = dict(
            session.execute(
                select(DagVersion.dag_id, DagVersion.id).join(
                    sub, (sub.c.dag_id == DagVersion.dag_id) & (sub.c.n == DagVersion.version_number)
                )
            ).all()
        )
        from airflow.utils.types import DagRunTriggeredByType

        self.triggered_by = DagRunTriggeredByType.TIMETABLE
        self.rows: dict[str, list[dict[str, Any]]] = {"dag_run": [], "task_instance": [], "xcom": []}
        self.next_run_pk = (session.scalar(text("SELECT coalesce(max(id), 0) FROM dag_run")) or 0) + 1

    def run(self, dag_id: str, when: datetime, interval: timedelta, state: str) -> tuple[int, str]:
        pk, self.next_run_pk = self.next_run_pk, self.next_run_pk + 1
        run_id = f"scheduled__{when.isoformat()}"
        self.rows["dag_run"].append(
            {
                "id": pk,
                "dag_id": dag_id,
                "run_id": run_id,
                "run_type": "scheduled",
                "logical_date": when - interval,
                "data_interval_start": when - interval,
                "data_interval_end": when,
                "run_after": when,
                "queued_at": when,
                "start_date": when + timedelta(seconds=2),
                "end_date": None if state == "running" else when + timedelta(seconds=40),
                "state": state,
                "conf": {},
                "creating_job_id": None,
                "triggered_by": self.triggered_by,
                "log_template_id": self.log_template_id,
                "created_dag_version_id": self.versions[dag_id],
                "clear_number": 0,
                "last_scheduling_decision": when + timedelta(seconds=40),
                "context_carrier": {},
            }
        )
        return pk, run_id

    def task(
        self,
        dag_id: str,
        run: tuple[int, str],
        task_id: str,
        map_index: int,
        state: str,
        when: datetime,
        tally: dict[str, Any] | None,
        output: Any = None,
    ) -> None:
        from airflow.models.taskinstance import uuid7

        pk, run_id = run
        operator = {"scan": "ScanOperator", "compare": "CompareOperator", "callback": "CallbackOperator"}
        self.rows["task_instance"].append(
            {
                "id": uuid7(),
                "dag_id": dag_id,
                "task_id": task_id,
                "run_id": run_id,
                "map_index": map_index,
                "rendered_map_index": None if map_index < 0 else f"ids {map_index * 1000}..{map_index * 1000 + 999}",
                "try_number": 2 if state == "up_for_retry" else 1,
                "max_tries": 2,
                "state": state,
                "start_date": when,
                "end_date": None if state == "running" else when + timedelta(seconds=5),
                "duration": None if state == "running" else 5.0,
                "hostname": "worker-1",
                "unixname": "airflow",
                "pool": "default_pool",
                "pool_slots": 1,
                "queue": "default",
                "priority_weight": 1,
                "operator": operator.get(task_id, task_id.title() + "Operator"),
                "executor_config": {},
                "dag_version_id": self.versions[dag_id],
                "queued_dttm": when,
                "scheduled_dttm": when,
                "updated_at": when + timedelta(seconds=5),
                "context_carrier": {},
            }
        )
        for key, value in ((TALLY_KEY, tally), ("return_value", output)):
            if value is None:
                continue
            self.rows["xcom"].append(
                {
                    "dag_run_id": pk,
                    "task_id": task_id,
                    "map_index": map_index,
                    "key": key,
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "value": value,  # the JSON object itself, as the Execution API's set_xcom stores it
                    "timestamp": when + timedelta(seconds=5),
                    "dag_result": False,
                }
            )

    def flush(self) -> dict[str, int]:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from sqlalchemy import insert, text

        counts = {}
        for name, table in (
            ("dag_run", DagRun.__table__),
            ("task_instance", TaskInstance.__table__),
            ("xcom", XComModel.__table__),
        ):
            rows = self.rows[name]
            for start in range(0, len(rows), self.BATCH):
                self.session.execute(insert(table), rows[start : start + self.BATCH])
            counts[name] = len(rows)
            rows.clear()
        # the ids were given, not drawn from the sequence: the scheduler's next run must not collide
        self.session.execute(text("SELECT setval(pg_get_serial_sequence('dag_run', 'id'), max(id)) FROM dag_run"))
        self.session.commit()
        return counts


def pair_history(w: Writer, i: int, expected: Expected) -> None:
    """Pair ``i``'s runs, oldest first, and its scan-state Variables; what the page must show of it."""
    from airflow.models.variable import Variable

    variable: Any = Variable  # sets val through its encrypting setter, as Variable.set does
    dag_id = pair_id(i)
    rng = random.Random(i)
    k = w.mapped
    newest = w.now - timedelta(minutes=1 + (i * 7) % 90)  # pairs run at unrelated times
    found_total: Counter[str] = Counter()
    rows_total = delivered = waiting = failed = 0
    cursor = 0
    last_state = ""
    problems: list[tuple[str, int]] = []
    backlog = (i % 4) * 500
    for j in range(w.runs):
        when = newest - RUN_EVERY * (w.runs - 1 - j)
        last = j == w.runs - 1
        state = "success"
        if last and i % 10 == 3:
            state = "failed"
        elif last and i % 10 == 7:
            state = "running"
        elif j % 25 == 5:
            state = "failed"
        run = w.run(dag_id, when, RUN_EVERY, state)
        cursor += rng.randint(200, 2000)
        max_id = cursor + (backlog if last else 0)
        scan = {"version": 1, "task": "scan", "max_id": max_id, "cursor": cursor, "until": when.isoformat()}
        parts = [{"version": 1, "kind": "ids", "after": cursor - 1000 + m, "upto": cursor} for m in range(k)]
        w.task(dag_id, run, "scan", -1, "success", when, scan, parts)
        for m in range(k):
            rows = rng.randint(100, 5000)
            found = {"1": rng.randint(1, 5), "2": rng.randint(0, 3)} if rng.random() < 0.2 else {}
            if state != "success" and m == 0:
                found = {"1": 5, "2": 2}
            found = {t: n for t, n in found.items() if n}
            events = sum(found.values())
            compare = {"version": 1, "task": "compare", "rows": rows, "found": found}
            output = [
                {"eventId": f"{dag_id}-{j}-{m}-{t}-{e}", "type": int(t)} for t, n in found.items() for e in range(n)
            ]
            w.task(dag_id, run, "compare", m, "success", when, compare, output)
            ti_state, done = "success", events
            if state != "success" and m == 0:
                ti_state = "up_for_retry" if state == "running" else "failed"
                done = events // 2
                if state == "running":
                    waiting += events - done
                else:
                    failed += events - done
                if last:
                    problems.append(("callback", m))
            callback = {"version": 1, "task": "callback", "events": events, "delivered": done, "failed": events - done}
            w.task(dag_id, run, "callback", m, ti_state, when, callback)
            rows_total += rows
            found_total.update(found)
            delivered += done
        last_state = state
    expected.tallies += w.runs * (1 + 2 * k)
    expected.pair_tallies += w.runs * (1 + 2 * k)
    expected.runs += w.runs
    w.session.add(variable(key=f"cupid.{dag_id}.insert_cursor", val=json.dumps(_cursor_state(cursor, w.now))))
    mark = {"version": 1, "until": newest.isoformat(), "open": {}}
    w.session.add(variable(key=f"cupid.{dag_id}.update_hwm", val=json.dumps(mark)))
    pair: dict[str, Any] = {
        "runs": w.runs,
        "rows": rows_total,
        "found": {t: found_total.get(t, 0) for t in ("1", "2", "3")},
        "callbacks": {"delivered": delivered, "waiting": waiting, "failed": failed},
        "cursor": cursor,
        "backlog": backlog,
        "until": newest.isoformat(),
        "last_state": last_state,
        "problems": [{"task_id": t, "map_index": m} for t, m in problems],
        "reconcile": None,
    }
    if i % RECONCILE_EVERY == 0:
        pair["reconcile"] = reconcile_history(w, dag_id + "_reconcile", rng, expected)
    expected.pairs[dag_id] = pair


def _cursor_state(cursor: int, now: datetime) -> dict[str, Any]:
    claims = {
        f"scheduled__{(now - RUN_EVERY * n).isoformat()}": [cursor - 1000 * (n + 1), cursor - 1000 * n]
        for n in range(3)
    }
    return {"version": 1, "cursor": cursor, "claims": claims, "open": {}}


def reconcile_history(w: Writer, dag_id: str, rng: random.Random, expected: Expected) -> dict[str, int]:
    """A reconcile DAG's daily runs: ``plan`` (no tally), ``reconcile`` and ``callback`` per segment."""
    k = w.mapped
    found: dict[str, int] = {}
    for d in range(RECONCILE_RUNS):
        when = w.now - timedelta(days=RECONCILE_RUNS - 1 - d, hours=3)
        run = w.run(dag_id, when, timedelta(days=1), "success")
        w.task(dag_id, run, "plan", -1, "success", when, None, [{"segment": m} for m in range(k)])
        found = {}
        for m in range(k):
            seg = {"3": rng.randint(0, 4), "2": rng.randint(0, 1)}
            seg = {t: n for t, n in seg.items() if n}
            tally = {
                "version": 1,
                "task": "reconcile",
                "rows": 500_000,
                "found": seg,
                "chunks": 40,
                "checksummed": 38,
                "read": 2,
            }
            w.task(dag_id, run, "reconcile", m, "success", when, tally, [])
            events = sum(seg.values())
            cb = {"version": 1, "task": "callback", "events": events, "delivered": events, "failed": 0}
            w.task(dag_id, run, "callback", m, "success", when, cb)
            for t, n in seg.items():
                found[t] = found.get(t, 0) + n
        expected.tallies += 2 * k
        expected.runs += 1
    return {t: found.get(t, 0) for t in ("1", "2", "3")}


# ---------------------------------------------------------------------- measuring, in a fresh process


def measure(expect_path: Path, out_path: Path, repeat: int, profile: bool) -> None:
    """The pages, as the api-server loads them: one session per page (``create_session``, as the view)."""
    from airflow import settings
    from airflow.models.dag import DagModel  # noqa: F401  (the api-server has Airflow's models loaded)
    from airflow.models.dagrun import DagRun  # noqa: F401
    from airflow.models.taskinstance import TaskInstance  # noqa: F401
    from airflow.models.variable import Variable  # noqa: F401
    from airflow.models.xcom import XComModel  # noqa: F401
    from airflow.utils.session import create_session
    from sqlalchemy import event
    from sqlalchemy.orm import configure_mappers

    # Paid once per process, before any page: an api-server that has answered any UI request has
    # its ORM mappers configured (a third of a second here); the cupid modules load on first use.
    t0 = time.perf_counter()
    configure_mappers()
    t1 = time.perf_counter()
    import cupid_airflow.dag_factory  # noqa: F401  (load_page imports it on first use: its tag names)
    from cupid_airflow.plugins.drift_data import load_page
    from cupid_airflow.plugins.drift_view import render_page

    warmup = {"mappers_ms": (t1 - t0) * 1000, "imports_ms": (time.perf_counter() - t1) * 1000}

    statements: list[dict[str, Any]] = []
    started: list[float] = []

    def before(*_: Any) -> None:
        started.append(time.perf_counter())

    def after(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(
            {"sql": statement, "rows": cursor.rowcount, "ms": (time.perf_counter() - started.pop()) * 1000}
        )

    assert settings.engine is not None
    event.listen(settings.engine, "before_cursor_execute", before)
    event.listen(settings.engine, "after_cursor_execute", after)

    pages: list[dict[str, Any]] = []
    page: Any = None
    html = ""
    for _ in range(1 + repeat):
        statements.clear()
        t0 = time.perf_counter()
        with create_session() as session:
            page = load_page(session)
        t1 = time.perf_counter()
        html = render_page(page)
        t2 = time.perf_counter()
        pages.append(
            {
                "load_ms": (t1 - t0) * 1000,
                "render_ms": (t2 - t1) * 1000,
                "statements": len(statements),
                "sql_ms": sum(s["ms"] for s in statements),
                # tally values read (not the per-run record versions, which read no value)
                "xcom_rows": sum(s["rows"] for s in statements if "xcom.value" in s["sql"]),
                "detail": [
                    {"sql": " ".join(s["sql"].split())[:90], "rows": s["rows"], "ms": round(s["ms"], 1)}
                    for s in statements
                ],
            }
        )
    expected = json.loads(expect_path.read_text())
    # the first page reads every tally; later ones only those of runs not finished (or changed)
    # since: finished runs' sums are cached in the process (drift_data._FINISHED)
    problems = check(page, html, expected, pages[0]["xcom_rows"])
    top = ""
    if profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        with profiler, create_session() as session:
            render_page(load_page(session))
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        top = out.getvalue()
    result = {**warmup, "pages": pages, "html_bytes": len(html.encode()), "problems": problems}
    out_path.write_text(json.dumps({**result, "profile": top}))


def check(page: Any, html: str, expected: dict[str, Any], xcom_rows: int) -> list[str]:
    """Where the page differs from what was inserted (empty: a correct page)."""
    problems = []
    data = page.as_dict()
    shown = {p["dag_id"]: p for p in data["pairs"]}
    if sorted(shown) != sorted(expected["pairs"]):
        problems.append(f"pairs shown {len(shown)}, inserted {len(expected['pairs'])}")
    for dag_id, want in expected["pairs"].items():
        got = shown.get(dag_id)
        if got is None:
            continue
        reconcile = got["last_reconcile"]
        have = {
            "runs": len(got["runs"]),
            "rows": got["window"]["rows"],
            "found": got["window"]["found"],
            "callbacks": got["callbacks"],
            "cursor": got["insert_cursor"],
            "backlog": got["backlog"],
            "until": got["update_mark"],
            "last_state": got["last_run"]["state"],
            "problems": got["last_run"]["problems"],
            "reconcile": None if reconcile is None else reconcile["found"],
        }
        for key, value in have.items():
            if value != want[key]:
                problems.append(f"{dag_id} {key}: page {value!r}, inserted {want[key]!r}")
    broken = sorted(b["config"] for b in data["broken_configs"])
    if broken != expected["broken"]:
        problems.append(f"broken configs on the page {broken}, written {expected['broken']}")
    if xcom_rows != expected["tallies"]:
        problems.append(f"tallies read {xcom_rows}, inserted {expected['tallies']}")
    tasks = sum(r.figures.tasks for p in page.pairs for r in p.runs)
    if tasks != expected["pair_tallies"]:
        problems.append(f"tallies summed into the pairs' runs {tasks}, inserted {expected['pair_tallies']}")
    if html.count('class="pair ') != len(expected["pairs"]) or html.count('class="broken-config"') != len(broken):
        problems.append("the HTML does not have a row per pair and an item per broken config")
    return problems[:20]


# ---------------------------------------------------------------------- the bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="50,200", help="fleet sizes, comma-separated (default 50,200)")
    parser.add_argument("--runs", type=int, default=100, help="runs per pair in the 7-day window (default 100)")
    parser.add_argument("--mapped", type=int, default=2, help="compare and callback tasks per run, K (default 2)")
    parser.add_argument("--repeat", type=int, default=5, help="warm pages per size, median shown (default 5)")
    parser.add_argument("--profile", action="store_true", help="profile one more page per size (cProfile, tottime)")
    parser.add_argument("--keep", action="store_true", help="keep AIRFLOW_HOME (the configs) in /tmp")
    parser.add_argument("--measure", nargs=2, type=Path, help=argparse.SUPPRESS)  # the child: expected, result
    args = parser.parse_args()
    if args.measure:
        measure(args.measure[0], args.measure[1], args.repeat, args.profile)
        return
    if args.runs * RUN_EVERY >= timedelta(days=7):
        parser.error(f"--runs {args.runs}: at most {timedelta(days=7) // RUN_EVERY} fit in the window")
    sizes = sorted({int(n) for n in args.pairs.split(",")})

    database = f"cupid_view_{uuid.uuid4().hex[:10]}"
    home = Path(tempfile.mkdtemp(prefix="cupid-view-", dir="/tmp"))
    env = airflow_env(home, database)
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})  # before airflow is imported
    configs = home / "dags" / "configs"
    configs.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "cupid_dags.py", home / "dags")
    for name, text in BROKEN.items():
        (configs / name).write_text(text)

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    pg_admin(f'CREATE DATABASE "{database}"')
    try:
        print(f"metadata database {database}: airflow db migrate ...", flush=True)
        print(f"  migrated in {airflow_cli(env, 'db', 'migrate'):.0f} s", flush=True)
        from airflow.utils.session import create_session

        expected = Expected()
        now = datetime.now(UTC)
        have = 0
        for n in sizes:
            for i in range(have, n):
                (configs / f"view_{i:03d}.json").write_text(json.dumps(pair_config(i)))
            seconds = airflow_cli(env, "dags", "reserialize")
            t0 = time.perf_counter()
            inserted: Counter[str] = Counter()
            with create_session() as session:
                writer = Writer(session, now, args.mapped, args.runs)
                for i in range(have, n):
                    pair_history(writer, i, expected)
                    if i % 25 == 24:
                        inserted.update(writer.flush())
                inserted.update(writer.flush())
            have_before, have = have, n
            reconcile = sum(1 for p in expected.pairs.values() if p["reconcile"] is not None)
            print(
                f"{n} pairs (+{reconcile} reconcile DAGs, {len(BROKEN)} broken configs): DAGs synced by Airflow in "
                f"{seconds:.0f} s; inserted for pairs {have_before}..{n - 1}: {dict(inserted)} "
                f"in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            expect_path, out_path = home / "expected.json", home / "result.json"
            expect_path.write_text(json.dumps(expected.as_dict()))
            child = [sys.executable, str(Path(__file__).resolve()), "--repeat", str(args.repeat), "--measure"]
            child[2:2] = ["--profile"] if args.profile else []
            subprocess.run([*child, str(expect_path), str(out_path)], env=env, check=True, timeout=600)
            result = json.loads(out_path.read_text())
            result.update(pairs=n, reconcile=reconcile, runs=expected.runs, tallies=expected.tallies)
            results.append(result)
            print(line(result), flush=True)
            if result["profile"]:
                print(result["profile"], flush=True)
            if result["problems"]:
                raise SystemExit("the page differs from what was inserted:\n  " + "\n  ".join(result["problems"]))
    finally:
        if "airflow.settings" in sys.modules:
            from airflow import settings

            if settings.engine is not None:
                settings.engine.dispose()
        pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    summary(args, results, time.monotonic() - started)


def _warm(result: dict[str, Any], key: str) -> float:
    return statistics.median(p[key] for p in result["pages"][1:])


def line(result: dict[str, Any]) -> str:
    cold = result["pages"][0]
    return (
        f"  page: load {cold['load_ms']:.0f} ms cold (SQL {cold['sql_ms']:.0f} ms) / "
        f"{_warm(result, 'load_ms'):.0f} ms warm "
        f"(SQL {_warm(result, 'sql_ms'):.0f} ms), render {_warm(result, 'render_ms'):.0f} ms, "
        f"{cold['statements']} statements, {cold['xcom_rows']:,} tallies read "
        f"({result['pages'][-1]['xcom_rows']:,} warm), {result['html_bytes'] / 1024:.0f} KiB; "
        f"figures checked: {'ok' if not result['problems'] else 'WRONG'}"
    )


def summary(args: argparse.Namespace, results: list[dict[str, Any]], elapsed: float) -> None:
    print()
    print(
        f"summary ({elapsed:.0f} s; {args.runs} runs per pair in 7 days, 1 scan + {args.mapped} compare + "
        f"{args.mapped} callback tasks per run, each with a tally; warm: median of {args.repeat} pages)"
    )
    print(
        f"{'pairs':>5} {'runs':>6} {'tallies':>8} {'stmts':>5} {'load cold':>9} {'load warm':>9} {'SQL warm':>8} "
        f"{'render':>6} {'HTML KiB':>8} {'mappers':>7} {'imports':>7}"
    )
    for r in results:
        print(
            f"{r['pairs']:>5} {r['runs']:>6} {r['pages'][0]['xcom_rows']:>8,} {r['pages'][0]['statements']:>5} "
            f"{r['pages'][0]['load_ms']:>7.0f}ms {_warm(r, 'load_ms'):>7.0f}ms {_warm(r, 'sql_ms'):>6.0f}ms "
            f"{_warm(r, 'render_ms'):>4.0f}ms {r['html_bytes'] / 1024:>8.0f} {r['mappers_ms']:>5.0f}ms "
            f"{r['imports_ms']:>5.0f}ms"
        )
    print(
        "cold: the first page of a fresh process (a new connection, statements compiled), after its ORM mappers\n"
        "were configured and the cupid modules imported (paid once per process, shown apart: mappers, imports)"
    )
    if results:
        last = results[-1]
        print(f"statements of one warm page at {last['pairs']} pairs (rows, ms):")
        for s in last["pages"][-1]["detail"]:
            print(f"  {s['rows']:>7,} {s['ms']:>7.1f}  {s['sql']}")


if __name__ == "__main__":
    main()
