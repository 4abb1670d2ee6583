"""``validate --connect``: what only the databases know, found before the first run (issue 14)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cupid_airflow.__main__ import main
from tests.conftest import MYSQL, MySqlDatabase

SECRET = "Zq9-wrong-Pw-7781"


@pytest.fixture
def tables(mysql_db: Callable[[str], MySqlDatabase]) -> tuple[MySqlDatabase, MySqlDatabase]:
    src, des = mysql_db("src"), mysql_db("des")
    src.execute(
        "CREATE TABLE `user` (id BIGINT PRIMARY KEY AUTO_INCREMENT, number VARCHAR(32) NOT NULL UNIQUE, "
        "name VARCHAR(255), update_time DATETIME NOT NULL, KEY (update_time))"
    )
    des.execute("CREATE TABLE `user` (id BIGINT PRIMARY KEY AUTO_INCREMENT, number VARCHAR(32) UNIQUE, nick TEXT)")
    src.execute("INSERT INTO `user` (number, name, update_time) VALUES ('a', 'x', '2026-01-01 00:00:00')")
    return src, des


def config_for(src: MySqlDatabase, des: MySqlDatabase, **src_keys: Any) -> dict[str, Any]:
    return {
        "src": {"dsn": src.dsn, "table": "user", "byColumn": "number", "updateColumn": "update_time", **src_keys},
        "des": [
            {
                "dsn": des.dsn,
                "table": "user",
                "byColumn": "number",
                "columns": {"number": "number", "name": "nick"},
                "callbackNotification": {"url": "127.0.0.1:9/cb"},
            }
        ],
    }


def validate(tmp_path: Path, config: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(config))
    code = main(["validate", "--connect", str(path)])
    out = capsys.readouterr().out
    return code, [line.removeprefix(f"{path}: ") for line in out.splitlines()]


def test_a_good_pair_is_ok(tables: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = validate(tmp_path, config_for(*tables), capsys)
    assert (code, lines) == (0, ["OK, databases checked -> cupid_pair"])


def test_offline_validate_does_not_connect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {
        "src": {"dsn": "u:p@tcp(127.0.0.1:9)/nowhere", "table": "t", "byColumn": "k", "update": False},
        "des": [{"dsn": "u:p@tcp(127.0.0.1:9)/nowhere", "table": "t", "byColumn": "k", "columns": {"a": "a"},
                 "callbackNotification": {"url": "127.0.0.1:9/cb"}}],
    }  # fmt: skip
    path = tmp_path / "offline.json"
    path.write_text(json.dumps(config))
    assert main(["validate", str(path)]) == 0


def test_wrong_credentials_name_the_key_and_server_never_the_password(
    tables: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, des = tables
    config = config_for(src, des)
    config["src"]["dsn"] = f"root:{SECRET}@tcp(127.0.0.1:{MYSQL['port']})/{src.name}"
    code, lines = validate(tmp_path, config, capsys)
    assert code == 1
    assert lines[0].startswith(f"src.dsn: cannot connect to src table user on 127.0.0.1:{MYSQL['port']}/{src.name}: ")
    assert "Access denied for user 'root'" in lines[0]
    assert not any(SECRET[i : i + 6] in line for line in lines for i in range(len(SECRET) - 5))


def test_an_unreachable_server_is_reported_in_bounded_time(
    tables: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, des = tables
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = config_for(src, des)
    config["des"][0]["dsn"] = f"root:@tcp(127.0.0.1:{port})/{des.name}"
    started = time.monotonic()
    code, lines = validate(tmp_path, config, capsys)
    assert code == 1 and lines[0].startswith("des[0].dsn: cannot connect to") and f"127.0.0.1:{port}" in lines[0]
    assert time.monotonic() - started < 60


def test_schema_problems_name_the_json_path_and_what_to_do(
    tables: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, des = tables
    des.execute("ALTER TABLE `user` DROP INDEX number, MODIFY number BIGINT")  # no index, another key type
    config = config_for(src, des, updateColumn="updated_at")
    config["des"][0]["columns"] = {"number": "number", "name": "nick", "bio": "bio"}
    code, lines = validate(tmp_path, config, capsys)
    assert code == 1
    assert (
        f"src.updateColumn: no column `updated_at` in src table user on 127.0.0.1:{MYSQL['port']}/{src.name}; "
        "it has: id, number, name, update_time" in lines
    )
    assert sorted(line.split(" on ")[0] for line in lines if line.startswith("des[0].columns.bio:")) == [
        "des[0].columns.bio: no column `bio` in des[0] table user",  # neither side has it
        "des[0].columns.bio: no column `bio` in src table user",
    ]
    warnings = [line for line in lines if line.startswith("warning: des[0].byColumn: ")]
    assert len(warnings) == 2 and "has no index" in warnings[0] + warnings[1]
    assert "keys differ in type: src `number` is VARCHAR(32), des `number` is BIGINT" in warnings[0] + warnings[1]


def test_a_missing_table_and_a_source_without_integer_id(
    mysql_db: Callable[[str], MySqlDatabase], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, des = mysql_db("src"), mysql_db("des")
    src.execute("CREATE TABLE `user` (id VARCHAR(36) PRIMARY KEY, number VARCHAR(32), name TEXT, update_time DATETIME)")
    code, lines = validate(tmp_path, config_for(src, des), capsys)
    assert code == 1
    assert any(line.startswith("src.table: `id` of") and "integer" in line for line in lines)
    assert any(line.startswith("des[0].table: no such table:") and des.name in line for line in lines)


def test_a_text_update_column_must_fit_its_format_and_sort(
    tables: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, des = tables
    src.execute("ALTER TABLE `user` MODIFY update_time VARCHAR(32) NOT NULL")
    src.execute("INSERT INTO `user` (number, name, update_time) VALUES ('b', 'y', '2026/01/02 03:04:05')")
    code, lines = validate(tmp_path, config_for(src, des, updateTimeFormate="Y-m-d H:i:s"), capsys)
    assert code == 1
    assert any(line.startswith("src.updateTimeFormate: `update_time` of") and "'2026/01/02 03:04:05'" in line
               for line in lines)  # fmt: skip

    src.execute("DELETE FROM `user` WHERE number = 'b'")
    code, lines = validate(tmp_path, config_for(src, des, updateTimeFormate="Y-n-j H:i:s"), capsys)
    assert code == 1 and any(line.startswith("src.updateTimeFormate:") and "does not sort" in line for line in lines)

    code, lines = validate(tmp_path, config_for(src, des, updateTimeFormate="Y-m-d H:i:s"), capsys)
    assert code == 0, lines


def test_the_command_line(tables: Any, tmp_path: Path) -> None:
    path = tmp_path / "cli.json"
    path.write_text(json.dumps(config_for(*tables)))
    done = subprocess.run(
        [sys.executable, "-m", "cupid_airflow", "validate", "--connect", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{path}: OK, databases checked -> cupid_cli" in done.stdout
