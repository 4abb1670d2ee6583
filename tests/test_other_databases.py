"""SQLite and PostgreSQL connections (``connId``) work wherever the SQL allows it."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pytest_httpserver import HTTPServer

from tests.airflow_run import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


def config(src_conn: str, des_conn: str, url: str, **src: object) -> dict[str, object]:
    return {
        "confirmSeconds": 0,  # called back at once: these tests are about the databases
        "src": {"connId": src_conn, "table": "user", "byColumn": "number", "updateColumn": "update_time",
                "updateTimeFormate": "Y-m-d H:i:s", **src},
        "des": [{"connId": des_conn, "table": "user", "columns": {"number": "number", "name": "name"},
                 "byColumn": "number", "callbackNotification": {"url": url}}],
    }  # fmt: skip


def received(httpserver: HTTPServer) -> dict[str, int]:
    return {json.loads(r.get_data())["byValue"]: json.loads(r.get_data())["type"] for r, _ in httpserver.log}


def sqlite_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: list[tuple[Any, ...]], replica: list[tuple[Any, ...]]
) -> None:
    """SQLite files ``user (id, number, name, update_time)`` and ``user (number, name)``, as the
    connections ``cupid_sqlite_src`` and ``cupid_sqlite_des``."""
    src, des = tmp_path / "src.db", tmp_path / "des.db"
    with sqlite3.connect(src) as db:
        db.execute("CREATE TABLE user (id INTEGER PRIMARY KEY, number TEXT UNIQUE, name TEXT, update_time TEXT)")
        db.executemany("INSERT INTO user (number, name, update_time) VALUES (?, ?, ?)", source)
    with sqlite3.connect(des) as db:
        db.execute("CREATE TABLE user (number TEXT PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO user VALUES (?, ?)", replica)
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_SQLITE_SRC", f"sqlite://{quote(str(src), safe='')}")
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_SQLITE_DES", f"sqlite://{quote(str(des), safe='')}")


def test_sqlite_pair(
    tmp_path: Path, configs_dir: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite_pair(
        tmp_path,
        monkeypatch,
        [("a", "Ann", "2026-05-01 10:00:00"), ("b", "Ben", "2026-05-01 10:30:00"), ("c", None, "2026-05-01 11:30:00")],
        [("a", "Ann"), ("b", "Benjamin"), ("c", "")],
    )
    httpserver.expect_request("/cb").respond_with_data("ok")
    settings = {"schedule": 3600, "inlineRows": 0}
    (configs_dir / "lite.json").write_text(
        json.dumps(config("cupid_sqlite_src", "cupid_sqlite_des", httpserver.url_for("/cb")) | settings)
    )

    result = run_dag("cupid_lite", logical_date=datetime(2026, 5, 1, 11, tzinfo=UTC))

    assert result.state == "success", result.task_states
    assert received(httpserver) == {"b": 2, "c": 2}  # insert scan: every id; update window 10:00-11:00
    assert [p["kind"] for p in result.partitions] == ["ids", "window"]
    assert result.partitions[1]["exclude_ids"] == [0, 3]  # the window leaves the insert claim's rows alone


@pytest.fixture
def postgres_db() -> Iterator[str]:
    import psycopg2

    name = f"cupid_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    yield name
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def pg_to_mysql(
    postgres_db: str, mysql_db: Any, monkeypatch: pytest.MonkeyPatch, source_sql: str, replica: list[tuple[str, str]]
) -> Any:
    """A PostgreSQL ``"user"`` table made by ``source_sql`` and a MariaDB ``user (number, name)`` replica,
    reachable as the connections ``cupid_pg_src`` and ``cupid_my_des``."""
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=postgres_db) as pg:
        pg.cursor().execute(source_sql)
    des = mysql_db("des")
    des.execute("CREATE TABLE user (number VARCHAR(8) PRIMARY KEY, name VARCHAR(32))")
    des.executemany("INSERT INTO user VALUES (%s, %s)", replica)
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_PG_SRC", f"postgresql://postgres@127.0.0.1:5432/{postgres_db}")
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_MY_DES", f"mysql://root@127.0.0.1:3306/{des.name}")
    return des


def test_postgres_source_to_mysql_destination(
    postgres_db: str, mysql_db: object, configs_dir: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_to_mysql(
        postgres_db,
        mysql_db,
        monkeypatch,
        'CREATE TABLE "user" (id BIGSERIAL PRIMARY KEY, number TEXT UNIQUE, name TEXT, update_time TIMESTAMP);'
        'INSERT INTO "user" (number, name, update_time) VALUES '
        "('a', 'Ann', '2026-05-01 10:00:00'), ('b', 'Ben', '2026-05-01 10:30:00'), ('c', 'Cy', NULL);",
        [("a", "Ann"), ("b", "ben")],
    )
    httpserver.expect_request("/cb").respond_with_data("ok")
    (configs_dir / "pg.json").write_text(json.dumps(config("cupid_pg_src", "cupid_my_des", httpserver.url_for("/cb"))))

    result = run_dag("cupid_pg")

    assert result.state == "success", result.task_states
    assert received(httpserver) == {"b": 2, "c": 1}


def test_checksums_agree_across_mysql_and_postgres_for_the_same_data(postgres_db: str, mysql_db: object) -> None:
    """Identical rows give identical chunk checksums on both servers, so a cross-database
    reconcile reads only the chunks that really differ."""
    import psycopg2

    from cupid_airflow.dialects import MySqlDialect, PostgresDialect

    postgres, mysql = PostgresDialect(), MySqlDialect()

    rows = [
        ("a", "Ann", "10.50", "2026-05-01 10:00:00"),
        ("b", None, "0.00", None),
        ("c", "", None, "2026-05-01 10:30:00"),
        ("d", "emoji 😀 and 中文", "-3.25", "1999-12-31 23:59:59"),
    ]
    columns = ["number", "name", "amount", "born"]
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=postgres_db) as pg, pg.cursor() as cur:
        cur.execute("CREATE TABLE t (number TEXT PRIMARY KEY, name TEXT, amount NUMERIC(12,2), born TIMESTAMP)")
        cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s)", rows)
        cur.execute(postgres.checksum_sql("t", [f'"{c}"' for c in columns], "1=1"))
        pg_sum = postgres.fold_checksum(cur.fetchone())
        cur.execute("UPDATE t SET name = 'ann' WHERE number = 'a'")
        cur.execute(postgres.checksum_sql("t", [f'"{c}"' for c in columns], "1=1"))
        pg_changed = postgres.fold_checksum(cur.fetchone())
    my = mysql_db("cks")  # type: ignore[operator]
    my.execute("CREATE TABLE t (number VARCHAR(8) PRIMARY KEY, name VARCHAR(32), amount DECIMAL(12,2), born DATETIME)")
    my.executemany("INSERT INTO t VALUES (%s, %s, %s, %s)", rows)
    my_sum = mysql.fold_checksum(my.execute(mysql.checksum_sql("t", [f"`{c}`" for c in columns], "1=1"))[0])
    assert my_sum == pg_sum and my_sum[0] == 4
    assert pg_changed != pg_sum and pg_changed[0] == 4


def test_reconcile_postgres_source_to_mysql_destination(
    postgres_db: str, mysql_db: object, configs_dir: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    des = pg_to_mysql(
        postgres_db,
        mysql_db,
        monkeypatch,
        'CREATE TABLE "user" (id BIGSERIAL PRIMARY KEY, number TEXT UNIQUE, name TEXT);'
        "INSERT INTO \"user\" (number, name) SELECT 'k' || lpad(i::text, 5, '0'), 'name ' || i "
        "FROM generate_series(1, 3000) i;",
        [(f"k{i:05d}", f"name {i}") for i in range(1, 3001)],
    )
    des.execute("DELETE FROM user WHERE number = 'k00042'")
    des.execute("UPDATE user SET name = 'edited' WHERE number = 'k02500'")
    des.execute("INSERT INTO user VALUES ('k09999', 'deleted at the source')")
    httpserver.expect_request("/cb").respond_with_data("ok")
    settings = {"reconcile": {"segmentRows": 1000}}
    (configs_dir / "pgr.json").write_text(
        json.dumps(config("cupid_pg_src", "cupid_my_des", httpserver.url_for("/cb")) | settings)
    )

    result = run_dag("cupid_pgr_reconcile")

    assert result.state == "success", result.task_states
    assert received(httpserver) == {"k00042": 1, "k02500": 2, "k09999": 3}


def test_reconcile_sqlite_pair_without_checksums(
    tmp_path: Path, configs_dir: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite_pair(tmp_path, monkeypatch, [("a", "Ann", None), ("b", "Ben", None)],
                [("a", "Ann"), ("b", "Benjamin"), ("z", "gone")])  # fmt: skip
    httpserver.expect_request("/cb").respond_with_data("ok")
    (configs_dir / "liter.json").write_text(
        json.dumps(config("cupid_sqlite_src", "cupid_sqlite_des", httpserver.url_for("/cb")) | {"reconcile": {}})
    )

    result = run_dag("cupid_liter_reconcile")

    assert result.state == "success", result.task_states
    assert received(httpserver) == {"b": 2, "z": 3}


def test_a_mysql_source_repaired_into_postgres_through_its_write_connection(
    postgres_db: str,
    mysql_db: Any,
    configs_dir: Path,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``repair: apply`` on a PostgreSQL destination (its MERGE and guards, psycopg's escaping),
    through the public interface: the DAG repairs exactly the divergent rows, hostile values intact."""
    import psycopg2

    src = mysql_db("src")
    src.execute("CREATE TABLE user (id BIGINT PRIMARY KEY AUTO_INCREMENT, number VARCHAR(8) UNIQUE, "
                "name VARCHAR(64), update_time DATETIME)")  # fmt: skip
    names = {"a": 'it\'s "Ann" \\ back', "b": "emoji \U0001f600 中文", "c": "semi; -- x", "d": "same"}
    src.executemany("INSERT INTO user (number, name) VALUES (%s, %s)", list(names.items()))
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=postgres_db) as pg:
        pg.cursor().execute(
            """CREATE TABLE "user" (number TEXT PRIMARY KEY, name TEXT); """
            """INSERT INTO "user" VALUES ('a', 'garbled'), ('d', 'same')"""
        )
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_MY_SRC", f"mysql://root@127.0.0.1:3306/{src.name}?charset=utf8mb4")
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_PG_DES", f"postgresql://postgres@127.0.0.1:5432/{postgres_db}")
    httpserver.expect_request("/cb").respond_with_data("ok")
    settings = config("cupid_my_src", "cupid_pg_des", httpserver.url_for("/cb"), update=False)
    settings["des"][0]["repair"] = {"mode": "apply", "connId": "cupid_pg_des", "dir": str(tmp_path)}  # type: ignore[index]
    (configs_dir / "topg.json").write_text(json.dumps(settings))

    result = run_dag("cupid_topg")

    assert result.state == "success", result.task_states
    assert received(httpserver) == {"a": 2, "b": 1, "c": 1}
    (summary,) = result.output("repair")
    assert summary["planned"] == summary["repaired"] == 3 and summary["skipped"] == summary["repair_failed"] == 0
    with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=postgres_db) as pg:
        cursor = pg.cursor()
        cursor.execute('SELECT number, name FROM "user"')
        assert dict(cursor.fetchall()) == names
    assert "MERGE INTO" in Path(summary["script"]).read_text()
