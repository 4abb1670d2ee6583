"""A real Airflow deployment in subprocesses: scheduler, dag-processor, triggerer and api-server.

Used by the end-to-end tests (``tests/test_e2e*.py``), the benchmarks (``bench/latency.py``,
``bench/fleet.py``, ``bench/celery_scale.py``) and the README screenshot. LocalExecutor by default;
given ``celery_workers`` it is what ``docker-compose.yaml`` runs: CeleryExecutor with Redis on
127.0.0.1:6379 as broker (this deployment's keys under a prefix of its own, deleted afterwards),
the metadata database as result backend, and one ``airflow celery worker`` per entry. The
metadata database is a throwaway PostgreSQL database on 127.0.0.1:5432 (SQLite locks under a real
scheduler). Everything lives in one temporary ``AIRFLOW_HOME``; :meth:`stop` shuts the components
down with SIGTERM and :meth:`drop_database` drops the database and the broker's keys.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
#: Where the components send PushBear alerts unless extra_env says otherwise: nothing listens there.
PUSHBEAR_NOWHERE = "http://127.0.0.1:9"
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
#: What docker-compose.yaml gives the dag-processor alone: its two INFO lines per DAG per parse cost
#: it about 30% of its CPU with 200 configs (bench/dag_processor.py). The scheduler keeps them.
DAG_PROCESSOR_ENV = {
    "AIRFLOW__LOGGING__NAMESPACE_LEVELS": "airflow.models.dag=WARNING airflow.serialization.definitions.dag=WARNING"
}
#: What a Celery deployment of cupid sets, here and in docker-compose.yaml (tests/test_compose.py
#: checks that the file does). Redis redelivers a task its worker has not acknowledged within the
#: visibility timeout, to a second worker, while the first still runs it: it must exceed the
#: longest try (a reconcile segment may take 6 h plus minAgeSeconds, a callback try to a slow
#: receiver hours). 24 h is the provider's default, set so that each component stops warning.
CELERY_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
}
#: ``airflow <this>`` starts a worker, in the tests and in docker-compose.yaml.
CELERY_WORKER_COMMAND = ("celery", "worker")
REDIS = {"host": "127.0.0.1", "port": 6379}
#: Set in each component's environment to its name: what :meth:`AirflowStack.kill_component` finds.
COMPONENT_MARKER = "CUPID_TEST_COMPONENT"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def pg_admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@dataclass
class AirflowStack:
    """One Airflow deployment. ``home`` must be an empty folder; the DAG file is copied into it."""

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    component_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per component, over extra_env
    #: Celery worker name -> the queues it serves (comma-separated); none: LocalExecutor.
    celery_workers: dict[str, str] = field(default_factory=dict)
    worker_concurrency: int = 2
    port: int = field(default_factory=free_port)
    database: str = field(default_factory=lambda: f"cupid_airflow_{uuid.uuid4().hex[:10]}")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    signalled_twice: list[str] = field(default_factory=list)
    _token: str | None = None

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def configs(self) -> Path:
        return self.dags_folder / "configs"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def broker_prefix(self) -> str:
        """This deployment's keys in the shared Redis: a leftover of another run is never consumed."""
        return f"{self.database}:"

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS + tuple(worker_component(name) for name in self.celery_workers)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CUPID_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__FERNET_KEY": _FERNET_KEY,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                # Real logins (not all-admins, where every request is an admin): the cupid view's
                # test checks that an anonymous request is refused. The passwords file is written
                # by start(); token() logs in with it.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API_AUTH__JWT_SECRET": _JWT_SECRET,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                    f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{self.database}"
                ),
                # New configs show up within seconds instead of the default 30 s re-parse period.
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                # setproctitle (Celery, the task supervisor) would otherwise overwrite the
                # environment block: /proc/<pid>/environ must stay readable for
                # leftover_processes() and kill_component() to find this deployment's processes.
                "SPT_NOENV": "1",
                # The components never see conftest's fixture: alerts go to a closed loopback port,
                # never to the public PushBear service, unless extra_env names a stand-in.
                "AIRFLOW_CONN_PUSHBEAR_DEFAULT": json.dumps({"conn_type": "pushbear", "host": PUSHBEAR_NOWHERE}),
            }
        )
        if self.celery_workers:
            env.update(CELERY_ENV)
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS['host']}:{REDIS['port']}/0",
                    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.broker_prefix,
                    "AIRFLOW__CELERY__RESULT_BACKEND": (
                        f"db+postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{self.database}"
                    ),
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                }
            )
        env.update(self.extra_env)
        return env

    def worker_env(self, name: str) -> dict[str, str]:
        """One worker's settings over :attr:`env`. Both workers run on this machine, so each reports
        its own name as the task instances' hostname (``[core] hostname_callable``), as two machines
        would, and serves its logs on a port of its own."""
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return {
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.stack.worker_hostname",
            "CUPID_TEST_WORKER_NAME": name,
            "PYTHONPATH": path,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Create the database, migrate it, then start every component and wait for the API."""
        self.configs.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dags" / "cupid_dags.py", self.dags_folder / "cupid_dags.py")
        (self.home / "component-logs").mkdir(exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({ADMIN: _ADMIN_PASSWORD}))
        pg_admin(f'CREATE DATABASE "{self.database}"')
        self.cli("db", "migrate", timeout=600)
        for component in self.components:
            self._launch(component)
        wait_for(self._api_up, 120, "the api-server to answer")
        if self.celery_workers:
            wait_for(self.workers_up, 120, "every Celery worker to answer a ping")

    def _launch(self, component: str) -> None:
        env = self.env | self.component_env.get(component, {})
        if component == "api-server":
            args = [component, "--workers", "1", "--host", "127.0.0.1"]
        elif name := worker_name(component):
            args = [*CELERY_WORKER_COMMAND, "--celery-hostname", f"{name}@%h", "--queues", self.celery_workers[name]]
            env |= self.worker_env(name)
        else:
            args = [component]
        log = (self.home / "component-logs" / f"{component}.log").open("ab")
        self.procs[component] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=env | {COMPONENT_MARKER: component},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGTERM reaches its children too
        )

    def stop_component(self, component: str, timeout: float = 60) -> int | None:
        """SIGTERM one component's process group and wait; its exit code (None: killed after ``timeout``)."""
        proc = self.procs.pop(component)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None

    def start_component(self, component: str) -> None:
        self._launch(component)

    def kill_component(self, component: str) -> list[int]:
        """SIGKILL one component's whole process group, and any process of it that left the
        group, as a machine lost would: no handler runs. The pids killed."""
        import psutil

        proc = self.procs.pop(component)
        # Task runners live in process groups of their own (Airflow's supervisor makes one per
        # task): the group, every descendant's group, and whatever carries the component's marker.
        tree = [proc.pid]
        with suppress(psutil.NoSuchProcess):
            tree += [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
        groups = set()
        for pid in tree:
            with suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        for group in groups:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        killed = list(tree)
        for other in self._processes():
            if (other.info["environ"] or {}).get(COMPONENT_MARKER) == component:
                with suppress(psutil.NoSuchProcess):
                    other.kill()
                    killed.append(other.pid)
        proc.wait()
        return killed

    def component_processes(self, component: str) -> list[int]:
        """Running processes that carry ``component``'s marker (zombies not counted)."""
        import psutil

        found = []
        for proc in self._processes():
            with suppress(psutil.NoSuchProcess):
                marked = (proc.info["environ"] or {}).get(COMPONENT_MARKER) == component
                if marked and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
        return found

    def workers_up(self) -> bool:
        """Every worker answers a ping through the broker (it consumes its queues from then on)."""
        if dead := self.dead_components():
            raise RuntimeError(f"component(s) exited: {dead}\n{self.log_tail()}")
        app = "airflow.providers.celery.executors.celery_executor.app"
        result = subprocess.run(
            [str(BIN / "celery"), "--app", app, "inspect", "ping", "--timeout", "2"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return all(f"{name}@" in result.stdout for name in self.celery_workers)

    def stop(self, timeout: float = 60) -> dict[str, int | None]:
        """SIGTERM every component (api-server last), wait for each; return their exit codes
        (None: killed with SIGKILL after ``timeout``).

        A component still running after half the timeout gets a second SIGTERM: Airflow's handlers
        exit by raising SystemExit from the signal handler, and Python drops that exception when the
        signal lands inside a garbage-collector callback (seen once with the scheduler:
        ``Exception ignored in: <function _collection_gced>``). Such components are listed in
        :attr:`signalled_twice`.
        """
        codes: dict[str, int | None] = {}
        for component in sorted(self.procs, key=lambda c: c == "api-server"):
            proc = self.procs[component]
            codes[component] = None
            for attempt in (1, 2):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    codes[component] = proc.wait(timeout / 2)
                    break
                except subprocess.TimeoutExpired:
                    if attempt == 1:
                        self.signalled_twice.append(component)
            if codes[component] is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        return codes

    def drop_database(self) -> None:
        """Drop the metadata database and this deployment's keys in the broker (each tried)."""
        try:
            pg_admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        finally:
            self._drop_broker_keys()

    def _drop_broker_keys(self) -> None:
        if self.celery_workers:
            import redis

            client = redis.Redis(**REDIS, socket_timeout=10)
            try:
                keys = list(client.scan_iter(match=f"{self.broker_prefix}*"))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()

    def leftover_processes(self) -> list[str]:
        """Processes still running with this stack's AIRFLOW_HOME in their environment."""
        return [f"{p.info['pid']}: {' '.join(p.info['cmdline'] or [])}" for p in self._processes()]

    def _processes(self) -> list[Any]:
        """Every running process with this stack's AIRFLOW_HOME in its environment (psutil, with
        ``pid``, ``cmdline`` and ``environ`` read)."""
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
            try:
                if (proc.info["environ"] or {}).get("AIRFLOW_HOME") == str(self.home):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of every component's log, for a failure message."""
        out = []
        for log in sorted((self.home / "component-logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"----- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def dead_components(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    # ------------------------------------------------------------------ CLI and REST API

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run ``airflow <args>`` against this deployment; its stdout, or an error with both streams."""
        result = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result.stdout

    def _api_up(self) -> bool:
        if dead := self.dead_components():
            raise RuntimeError(f"component(s) exited: {dead}\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def token(self) -> str:
        """A JWT of the deployment's admin, from the simple auth manager's login."""
        if self._token is None:
            login = json.dumps({"username": ADMIN, "password": _ADMIN_PASSWORD}).encode()
            request = urllib.request.Request(f"{self.url}/auth/token", data=login, method="POST")
            request.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(request, timeout=10) as response:
                self._token = json.load(response)["access_token"]
        return self._token

    def api(self, path: str, method: str = "GET", body: Any = None, **query: Any) -> Any:
        """Call the public REST API (``/api/v2/...``); the decoded JSON answer."""
        url = f"{self.url}/api/v2/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token()}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def variable(self, key: str) -> str | None:
        """An Airflow Variable's stored text (JSON for cupid's state), or None while it does not exist."""
        try:
            return str(self.api(f"variables/{urllib.parse.quote(key, safe='')}")["value"])
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the REST API lists it, or None while the dag-processor has not sent it yet."""
        dags = self.api("dags", dag_id_pattern=dag_id)["dags"]
        return next((d for d in dags if d["dag_id"] == dag_id), None)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api(f"dags/{dag_id}/dagRuns", limit=100, order_by="id")["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api(f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        return list(self.api(path, limit=1000)["task_instances"])

    def wait_run_done(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            if dead := self.dead_components():
                raise RuntimeError(f"component(s) exited: {dead}\n{self.log_tail()}")
            run = self.run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        return wait_for(done, timeout, f"run {run_id} of {dag_id} to finish", every=1)


def worker_component(name: str) -> str:
    """The component name (in :attr:`AirflowStack.procs` and its log file) of Celery worker ``name``."""
    return f"worker-{name}"


def worker_name(component: str) -> str | None:
    return component.removeprefix("worker-") if component.startswith("worker-") else None


def worker_hostname() -> str:
    """``[core] hostname_callable`` of a test worker: its name, as a worker on its own machine reports its host."""
    return os.environ["CUPID_TEST_WORKER_NAME"]


# Fixed per process, so the CLI and every component agree; this deployment is throwaway.
_FERNET_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
_JWT_SECRET = secrets.token_urlsafe(32)
ADMIN = "admin"
_ADMIN_PASSWORD = secrets.token_urlsafe(16)


# ---------------------------------------------------------------------- loopback receivers


class Recorder:
    """A loopback HTTP server that records what it is sent; stoppable and restartable on its port.

    ``POST`` bodies (callbacks) land in :attr:`events` keyed by ``webhook-id``; ``GET`` query
    strings (PushBear's ``/sub?sendkey=..&text=..``) land in :attr:`gets`.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.events: dict[str, dict[str, Any]] = {}
        self.arrivals: dict[str, float] = {}
        self.posts = 0
        self.bodies: list[dict[str, Any]] = []  # every accepted POST, repeats included
        self.gets: list[dict[str, str]] = []
        self.status = 200  # what POSTs get; anything but 200 records nothing
        #: Cleared, POSTs wait (up to a minute) before they are answered: callback tasks stay
        #: running for as long as a test needs; :attr:`held` counts the waiting requests.
        self.gate = threading.Event()
        self.gate.set()
        self.held = 0
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Recorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int = 200) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if not recorder.gate.is_set():
                    with recorder.lock:
                        recorder.held += 1
                    recorder.gate.wait(60)
                    with recorder.lock:
                        recorder.held -= 1
                if recorder.status != 200:
                    self._reply(recorder.status)
                    return
                with recorder.lock:
                    recorder.posts += 1
                    recorder.bodies.append(body)
                    event_id = self.headers.get("webhook-id") or body["eventId"]
                    recorder.events.setdefault(event_id, body)
                    recorder.arrivals.setdefault(event_id, time.time())
                self._reply()

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                with recorder.lock:
                    recorder.gets.append(query)
                self._reply()

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def by_value(self, event_type: int | None = None) -> dict[str, dict[str, Any]]:
        """Received events keyed by ``byValue`` (the last one wins), optionally of one type."""
        with self.lock:
            return {e["byValue"]: e for e in self.events.values() if event_type in (None, e["type"])}


def demo_seed_statements(prefix: str) -> list[str]:
    """The compose stack's MariaDB seed (``docker/mysql-init/01-demo.sql``) as statements, with its
    databases renamed ``<prefix>`` and ``<prefix>_replica`` so a test can load it on a shared server."""
    sql = (REPO / "docker" / "mysql-init" / "01-demo.sql").read_text().replace("cupid_demo", prefix)
    return [s.strip() for s in re.sub(r"^--.*$", "", sql, flags=re.M).split(";") if s.strip()]


@contextmanager
def deployment(
    prefix: str, extra_env: dict[str, str] | None = None, celery_workers: dict[str, str] | None = None
) -> Iterator[AirflowStack]:
    """An :class:`AirflowStack` in a fresh temporary home (not started), stopped, its database
    dropped and its home removed afterwards; the components' log tails are printed (pytest shows
    them when a test fails)."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    stack = AirflowStack(home, extra_env=extra_env or {}, celery_workers=celery_workers or {})
    try:
        yield stack
    finally:
        try:
            print(stack.log_tail(80))
            stack.stop()
            stack.drop_database()
        finally:
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def recording() -> Iterator[Recorder]:
    """A started :class:`Recorder`, stopped afterwards."""
    recorder = Recorder().start()
    try:
        yield recorder
    finally:
        recorder.stop()
