"""A source and a destination table in real MariaDB, a config for them, and a callback receiver."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.airflow_run import RunResult, run_dag
from tests.conftest import MySqlDatabase

SRC_TABLE = """CREATE TABLE `user` (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  number VARCHAR(32) NOT NULL UNIQUE,
  name VARCHAR(255) NULL,
  amount DECIMAL(12,2) NULL,
  born DATETIME(6) NULL,
  bio MEDIUMTEXT NULL,
  update_time DATETIME NOT NULL DEFAULT '2000-01-01 00:00:00',
  KEY (update_time)
)"""
DES_TABLE = """CREATE TABLE `user` (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  number VARCHAR(32) NOT NULL UNIQUE,
  name VARCHAR(255) NULL,
  amount VARCHAR(32) NULL,
  born DATETIME NULL,
  bio MEDIUMTEXT NULL
)"""
COLUMNS = {"number": "number", "name": "name", "amount": "amount", "born": "born", "bio": "bio"}


@dataclass
class Pair:
    """A source and a destination database, a config for them, and the callback receiver."""

    src: MySqlDatabase
    des: MySqlDatabase
    config_path: Path
    receiver: HTTPServer

    @property
    def dag_id(self) -> str:
        return f"cupid_{self.config_path.stem}"

    def configure(self, **changes: Any) -> None:
        """Change top-level keys, or ``src`` keys through ``src={...}``."""
        config = json.loads(self.config_path.read_text())
        for key, value in changes.items():
            if key == "src":
                config["src"].update(value)
            else:
                config[key] = value
        self.config_path.write_text(json.dumps(config))

    def add_source(self, *rows: tuple[Any, ...], table: str = "user") -> None:
        self.src.executemany(
            f"INSERT INTO `{table}` (number, name, amount, born, bio, update_time) VALUES (%s, %s, %s, %s, %s, %s)",
            [r if len(r) == 6 else (*r, "2000-01-01 00:00:00") for r in rows],
        )

    def add_destination(self, *rows: tuple[Any, ...]) -> None:
        self.des.executemany("INSERT INTO `user` (number, name, amount, born, bio) VALUES (%s, %s, %s, %s, %s)", rows)

    def run(self, conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> RunResult:
        self.receiver.clear_log()
        result = run_dag(self.dag_id, conf, logical_date)
        assert result.state == "success", result.task_states
        return result

    def answer_with(self, handler: Callable[[Any], Any]) -> None:
        """Replace the receiver's behaviour: ``handler(request)`` returns a werkzeug Response."""
        self.receiver.clear_all_handlers()
        self.receiver.expect_request("/cb", method="POST").respond_with_handler(handler)

    def callbacks(self) -> list[dict[str, Any]]:
        bodies = []
        for request, _ in self.receiver.log:
            assert request.headers["Content-Type"] == "application/json;charset=UTF-8"
            body = json.loads(request.get_data())
            assert request.headers["webhook-id"] == body["eventId"]
            bodies.append(body)
        return bodies

    def by_number(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for body in self.callbacks():
            number = body["srcColumn"]["number"]
            assert number not in found, f"{number} was reported twice in one run"
            found[number] = body
        return found


@pytest.fixture
def pair(
    mysql_db: Callable[[str], MySqlDatabase], configs_dir: Path, httpserver: HTTPServer, request: pytest.FixtureRequest
) -> Iterator[Pair]:
    src, des = mysql_db("src"), mysql_db("des")
    src.execute(SRC_TABLE)
    des.execute(DES_TABLE)
    httpserver.expect_request("/cb", method="POST").respond_with_data("ok")
    name = f"{request.node.name.split('[')[0].removeprefix('test_')}_{src.name.split('_')[2]}"
    config = {
        # The mapped compare and callback tasks, whatever the size: the tests of the inline path
        # (a small run finishing in its scan task) set inlineRows themselves.
        "inlineRows": 0,
        # Divergences called back at once: these tests are about what counts as different; the
        # confirmation before callback is tests/test_confirmation.py's (and test_confirm.py's).
        "confirmSeconds": 0,
        "src": {"dsn": src.dsn, "table": "user", "byColumn": "number", "update": False},
        "des": [
            {
                "dsn": des.dsn,
                "table": "user",
                "columns": COLUMNS,
                "byColumn": "number",
                "callbackNotification": {"url": httpserver.url_for("/cb").removeprefix("http://")},
            }
        ],
    }
    path = configs_dir / f"{name}.json"
    path.write_text(json.dumps(config))
    yield Pair(src, des, path, httpserver)
