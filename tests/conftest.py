"""Shared fixtures. Airflow is pointed at a throwaway AIRFLOW_HOME before anything imports it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="cupid-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ.pop("CUPID_CONFIG_DIR", None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


#: Where alerts go in tests that have no PushBear stand-in: a loopback port nothing listens on.
PUSHBEAR_NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def pushbear_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test pages the public PushBear service: a config with a sendkey and no stand-in sends
    its alert to a closed loopback port (refused, logged). The ``pushbear`` stand-in fixtures
    and tests that set AIRFLOW_CONN_PUSHBEAR_DEFAULT themselves override this."""
    import cupid_airflow.hooks.pushbear

    monkeypatch.setenv("AIRFLOW_CONN_PUSHBEAR_DEFAULT", json.dumps({"conn_type": "pushbear", "host": PUSHBEAR_NOWHERE}))
    monkeypatch.setattr(cupid_airflow.hooks.pushbear, "DEFAULT_BASE_URL", PUSHBEAR_NOWHERE)  # a connection without host


def sample_config(**overrides: Any) -> dict[str, Any]:
    """A small valid config as JSON data; ``overrides`` replace top-level keys."""
    config: dict[str, Any] = {
        "src": {
            "dsn": "cupid:s3cret-pw@tcp(127.0.0.1:3306)/app?charset=utf8",
            "table": "user",
            "byColumn": "number",
            "updateColumn": "update_time",
        },
        "des": [
            {
                "dsn": "cupid:other-pw@tcp(127.0.0.1:3306)/replica",
                "table": "user",
                "columns": {"number": "number", "name": "name"},
                "byColumn": "number",
                "callbackNotification": {"url": "127.0.0.1:20000/test/callback"},
            }
        ],
    }
    config.update(overrides)
    return config


@pytest.fixture
def configs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty configs folder that the DAG file reads (through $CUPID_CONFIG_DIR)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    monkeypatch.setenv("CUPID_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def write_config(configs_dir: Path) -> Callable[[str, dict[str, Any] | str], Path]:
    def write(name: str, content: dict[str, Any] | str) -> Path:
        path = configs_dir / name
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli_env(configs_dir: Path) -> Iterator[dict[str, str]]:
    yield {**os.environ, "CUPID_CONFIG_DIR": str(configs_dir)}


# ---------------------------------------------------------------------------- real services

MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


class MySqlDatabase:
    """A throwaway MariaDB/MySQL database: created for one test, dropped after it."""

    def __init__(self, name: str) -> None:
        import MySQLdb

        self.name = name
        self.conn = MySQLdb.connect(**MYSQL, charset="utf8mb4", autocommit=True)
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        self.conn.select_db(name)

    @property
    def dsn(self) -> str:
        return f"root:@tcp({MYSQL['host']}:{MYSQL['port']})/{self.name}?charset=utf8mb4"

    def execute(self, sql: str, params: Any = None) -> Any:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def executemany(self, sql: str, rows: list[Any]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql, rows)

    def hold_write_lock(self, table: str) -> Any:
        """A second connection holding ``LOCK TABLES <table> WRITE``: every other session's read of
        the table waits until it is closed (the lock goes with the connection)."""
        import MySQLdb

        conn = MySQLdb.connect(**MYSQL, db=self.name, autocommit=True)
        with conn.cursor() as cursor:
            cursor.execute(f"LOCK TABLES `{table}` WRITE")
        return conn

    def drop(self) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self.conn.close()


@pytest.fixture
def mysql_db(request: pytest.FixtureRequest) -> Iterator[Callable[[str], MySqlDatabase]]:
    """Makes uniquely named databases (``mysql_db("src")``) and drops them after the test."""
    import uuid

    made: list[MySqlDatabase] = []
    run = uuid.uuid4().hex[:8]

    def make(suffix: str) -> MySqlDatabase:
        db = MySqlDatabase(f"cupid_test_{run}_{suffix}")
        made.append(db)
        return db

    yield make
    for db in made:
        db.drop()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated SQLite metadata database in the throwaway AIRFLOW_HOME (dag.test() needs one)."""
    import subprocess
    import sys

    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def make_httpserver() -> Iterator[Any]:
    """pytest-httpserver's receiver, threaded: a slow answer must not hold up the others (as in production)."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="localhost", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()
