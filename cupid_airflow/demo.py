"""``make demo``: a real cupid run on a laptop, in under a minute, with nothing but Python.

Builds a throwaway Airflow home (SQLite metadata database) under ``.cupid-demo/``, a source and a
replica database with a known set of divergences (SQLite files, or MariaDB/MySQL when
``CUPID_DEMO_MYSQL`` holds a Go DSN such as ``root:@tcp(127.0.0.1:3306)/``), a callback receiver
on loopback, and runs the generated DAG for real with ``dag.test(use_executor=True)``, so that every
task's log is in the file the UI's Logs tab reads. Everything is rebuilt on every run, so it can be
run again and again.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

__all__ = ["main"]

ROWS = 5000
MISSING_EVERY = 97  # ~1% of rows never reached the replica (type 1)
CHANGED_EVERY = 89  # ~1% were garbled on the way (type 2)
DAG_FILE = '''"""cupid demo DAG file: one DAG per config in configs/."""

from cupid_airflow.dag_factory import build_dags

globals().update(build_dags(__file__))
'''


def ui_command(home: Path, port: int = 8080) -> str:
    """The api-server on the demo's Airflow home: enough to browse the run (no scheduler needed)."""
    airflow = Path(sys.executable).parent / "airflow"
    return (
        f"AIRFLOW_HOME={home / 'airflow'} AIRFLOW__CORE__DAGS_FOLDER={home / 'dags'} "
        f"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True {airflow} api-server --host 127.0.0.1 --port {port}"
    )


def _rows() -> list[tuple[Any, ...]]:
    rng = random.Random(42)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 3600))
    return [(i, f"U{i:06d}", f"user {i}", f"https://cdn.example.com/{rng.getrandbits(32):08x}.png", stamp)
            for i in range(1, ROWS + 1)]  # fmt: skip


def _expected() -> Counter[int]:
    expected: Counter[int] = Counter()
    for i in range(1, ROWS + 1):
        if i % MISSING_EVERY == 0:
            expected[1] += 1
        elif i % CHANGED_EVERY == 0:
            expected[2] += 1
    return expected


def _replica(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out = []
    for i, number, name, avatar, _ in rows:
        if i % MISSING_EVERY == 0:
            continue
        out.append((number, name + " (stale)" if i % CHANGED_EVERY == 0 else name, avatar))
    return out


def _sqlite_databases(home: Path) -> dict[str, Any]:
    src, des = home / "source.sqlite3", home / "replica.sqlite3"
    rows = _rows()
    with sqlite3.connect(src) as db:
        db.execute(
            "CREATE TABLE user (id INTEGER PRIMARY KEY, number TEXT UNIQUE, name TEXT, avatar TEXT, update_time TEXT)"
        )
        db.execute("CREATE INDEX user_update_time ON user (update_time)")
        db.executemany("INSERT INTO user VALUES (?, ?, ?, ?, ?)", rows)
    with sqlite3.connect(des) as db:
        db.execute("CREATE TABLE user (number TEXT PRIMARY KEY, name TEXT, avatar TEXT)")
        db.executemany("INSERT INTO user VALUES (?, ?, ?)", _replica(rows))
    os.environ["AIRFLOW_CONN_CUPID_DEMO_SRC"] = f"sqlite://{quote(str(src), safe='')}"
    os.environ["AIRFLOW_CONN_CUPID_DEMO_DES"] = f"sqlite://{quote(str(des), safe='')}"
    return {
        "src": {"connId": "cupid_demo_src"},
        "des": {"connId": "cupid_demo_des"},
        "where": f"SQLite files in {home}",
    }


def _mysql_databases(dsn: str) -> dict[str, Any]:
    import MySQLdb

    from cupid_airflow.dsn import parse_go_dsn

    server = parse_go_dsn(dsn if "/" in dsn else dsn + "/")
    kwargs: dict[str, Any] = {"user": server.user, "passwd": server.password or "", "charset": "utf8mb4"}
    kwargs.update(
        {"unix_socket": server.unix_socket} if server.unix_socket else {"host": server.host, "port": server.port}
    )
    conn = MySQLdb.connect(**kwargs, autocommit=True)
    cur = conn.cursor()
    rows = _rows()
    for db in ("cupid_demo", "cupid_demo_replica"):
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
    cur.execute("CREATE TABLE cupid_demo.user (id BIGINT PRIMARY KEY AUTO_INCREMENT, number VARCHAR(16) UNIQUE, "
                "name VARCHAR(64), avatar VARCHAR(255), update_time VARCHAR(19), KEY (update_time))")  # fmt: skip
    cur.execute(
        "CREATE TABLE cupid_demo_replica.user (number VARCHAR(16) PRIMARY KEY, name VARCHAR(64), avatar VARCHAR(255))"
    )
    cur.executemany("INSERT INTO cupid_demo.user VALUES (%s, %s, %s, %s, %s)", rows)
    cur.executemany("INSERT INTO cupid_demo_replica.user VALUES (%s, %s, %s)", _replica(rows))
    conn.close()
    base = dsn[: dsn.rfind("/")] if "/" in dsn else dsn
    return {
        "src": {"dsn": f"{base}/cupid_demo?charset=utf8mb4"},
        "des": {"dsn": f"{base}/cupid_demo_replica?charset=utf8mb4"},
        "where": "MariaDB/MySQL databases cupid_demo and cupid_demo_replica",
    }


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    by_type: ClassVar[Counter[int]] = Counter()
    ids: ClassVar[set[str]] = set()
    lock = threading.Lock()

    def do_POST(self) -> None:
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with _Receiver.lock:
            if event["eventId"] not in _Receiver.ids:
                _Receiver.ids.add(event["eventId"])
                _Receiver.by_type[event["type"]] += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _execution_api() -> Iterator[str]:
    """Airflow's Execution API (the app ``airflow api-server --apps execution`` serves) on a free
    loopback port, in a thread, for as long as the run lasts; yields its URL.

    Why: plain ``dag.test()`` runs each task inside the calling process and logs it to the console
    only, so the UI finds no log file and asks the task's host for it on port 8793 ("Could not read
    served logs"). With ``use_executor=True`` the tasks run the way a deployment runs them, under
    Airflow's task supervisor, which writes each try's log to the file the UI reads; the supervisor
    talks to this API. Served in-process because ``airflow api-server`` took 9-20 s to start on 2 cores.
    """
    import uvicorn
    from airflow.api_fastapi.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app("execution"), log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo's Execution API did not start; see the log above")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/execution/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _run(dag_id: str) -> dict[str, Any]:
    """Run in a child process (its own log goes to run.log): one dag.test() run whose tasks run
    under Airflow's LocalExecutor, each logging to its file under the Airflow home's ``logs/``."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from cupid_airflow.core.events import event_types

    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = DagBag(str(dags / "cupid_dags.py"), bundle_path=dags).dags[dag_id]
    with _execution_api() as url:
        os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = url
        started = time.monotonic()
        run = dag.test(use_executor=True)
        seconds = time.monotonic() - started
    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.run_id == run.run_id, XComModel.dag_id == dag_id))
        values = {(x.task_id, x.map_index): XComModel.deserialize_value(x) for x in xcoms if x.key == "return_value"}
    partitions = [p for (t, _), v in values.items() if t == "scan" for p in v]
    events: Counter[int] = Counter()
    for (task, _), value in values.items():
        if task == "compare":
            events.update({int(kind): n for kind, n in event_types(value).items()})
    rows = sum(p["upto"] - p["after"] for p in partitions if p["kind"] == "ids")
    return {"state": str(run.state), "seconds": seconds, "partitions": len(partitions), "rows": rows,
            "events": events}  # fmt: skip


#: Written into every folder the demo builds; only a folder holding it is ever deleted.
MARKER = ".cupid-demo-workdir"


class WorkdirError(Exception):
    """``--workdir`` names a folder the demo did not build: it is never deleted."""


def _made_by_demo(home: Path) -> bool:
    if (home / MARKER).is_file():
        return True
    dag_file = home / "dags" / "cupid_dags.py"  # a demo folder from before the marker existed
    return dag_file.is_file() and dag_file.read_text() == DAG_FILE


#: What a demo run writes into its folder; a rebuild deletes these and nothing else.
_BUILT = ("dags", "airflow", "source.sqlite3", "replica.sqlite3", "run.log")


def prepare_workdir(home: Path) -> None:
    """Make ``home`` ready for a new demo run: create it (or take it when empty), or, when a demo
    built it (it holds :data:`MARKER`), delete what the demo wrote there and nothing else; refuse
    any other folder."""
    if home.exists():
        if not home.is_dir():
            raise WorkdirError(f"--workdir {home} is a file, not a folder; give a new folder's path")
        if not _made_by_demo(home):
            if any(home.iterdir()):
                raise WorkdirError(
                    f"--workdir {home} is not empty and was not made by the demo (no {MARKER} in it), so it is "
                    "left alone; give a new or empty folder, such as .cupid-demo"
                )
        else:
            for name in _BUILT:  # a file the user put beside them stays
                path = home / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text(
        "made by `python -m cupid_airflow demo`; its next run deletes and rebuilds what it wrote here\n"
    )


def main(workdir: str | Path = ".cupid-demo") -> int:
    t0 = time.monotonic()
    home = Path(workdir).resolve()
    try:
        prepare_workdir(home)
    except WorkdirError as e:
        print(f"cupid demo: {e}", file=sys.stderr)
        return 2
    (home / "dags" / "configs").mkdir(parents=True)
    (home / "dags" / "cupid_dags.py").write_text(DAG_FILE)
    os.environ.update(
        AIRFLOW_HOME=str(home / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",  # runs the tasks (see _execution_api)
        AIRFLOW__CORE__PARALLELISM="4",  # it forks this many workers at start (32 by default)
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "airflow" / "logs"),
    )
    os.environ.pop("CUPID_CONFIG_DIR", None)
    print(f"cupid demo: building an Airflow home and two databases in {home}")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    mysql = os.environ.get("CUPID_DEMO_MYSQL")
    databases = _mysql_databases(mysql) if mysql else _sqlite_databases(home)

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    columns = {"number": "number", "name": "name", "avatar": "avatar"}
    callback = {"url": f"127.0.0.1:{server.server_address[1]}/cupid"}
    config = {
        "workerNumber": 8,
        "src": {**databases["src"], "table": "user", "byColumn": "number", "updateColumn": "update_time",
                "updateTimeFormate": "Y-m-d H:i:s", "updateScanSecond": 7200},
        "des": [{**databases["des"], "table": "user", "columns": columns, "byColumn": "number",
                 "callbackNotification": callback}],
    }  # fmt: skip
    (home / "dags" / "configs" / "demo.json").write_text(json.dumps(config, indent=2))
    dag_id = "cupid_demo"
    log_file = home / "run.log"
    print(
        f"  source and replica: {databases['where']} ({ROWS:,} rows, {sum(_expected().values())} divergences planted)"
    )
    print(f"  config: {home / 'dags' / 'configs' / 'demo.json'} -> DAG {dag_id}")
    print(f"  running {dag_id} with dag.test(use_executor=True) (its log: {log_file}) ...")
    code = f"import json; from cupid_airflow.demo import _run; print('RESULT', json.dumps(_run({dag_id!r})))"
    with log_file.open("w") as log:
        child = subprocess.run(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=log, text=True, env=os.environ
        )
    log_file.open("a").write(child.stdout)
    result_line = next((line for line in child.stdout.splitlines() if line.startswith("RESULT ")), None)
    server.shutdown()
    if child.returncode != 0 or result_line is None:
        print(f"cupid demo: the run did not finish; see {log_file}", file=sys.stderr)
        return 1
    result = json.loads(result_line.removeprefix("RESULT "))
    found = {int(k): v for k, v in result["events"].items()}
    expected = _expected()
    print()
    print(f"DAG {dag_id}: run {result['state']} in {result['seconds']:.1f} s")
    print(f"  rows scanned:        {result['rows']:,} new ids ({result['partitions']} partition(s) compared)")
    print(f"  divergences found:   {found.get(1, 0)} missing (type 1, planted {expected[1]}), "
          f"{found.get(2, 0)} different (type 2, planted {expected[2]})")  # fmt: skip
    print(f"  callbacks delivered: {_Receiver.by_type[1]} type 1, {_Receiver.by_type[2]} type 2 (receiver on loopback)")
    print(f"  logs:                each task's in the UI and in {home / 'airflow' / 'logs'}; the run's in {log_file}")
    print(f"  see it in the UI:    {ui_command(home)}")
    print("                       then open http://localhost:8080 (every user is an admin)")
    print(f"cupid demo finished in {time.monotonic() - t0:.0f} s")
    ok = result["state"] == "success" and found == dict(expected) and dict(_Receiver.by_type) == dict(expected)
    return 0 if ok else 1
