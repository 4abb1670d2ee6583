"""Fix SQL (issue 28, first part): confirmed divergences planned as guarded statements and written
as a script, applied by the database's own client (``mysql``, ``psql``) on real MariaDB and
PostgreSQL. Hostile values round-trip exactly; a row changed after the compare is never
overwritten or deleted; a script applied twice changes nothing the second time."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cupid_airflow.core.compare import PairComparer
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import Event
from cupid_airflow.core.repair import RepairColumns, RepairKind, plan_repairs
from cupid_airflow.hooks.table import Table
from tests.conftest import MYSQL, MySqlDatabase

COLUMNS = ("name", "data", "amount", "at", "n")
REPAIR = RepairColumns("number", COLUMNS, "number", COLUMNS)
HOSTILE = [
    "it's \"quoted\"", "back\\slash \\' \\\\", "emoji \U0001f600 and \u00e9", "semi; -- comment /* */", "x" * 65536,
    "", " trailing ",
]  # fmt: skip


@dataclass
class Side:
    """One database holding both tables: ``src`` and ``user`` (the destination)."""

    kind: str
    table: Callable[[str], Table]
    execute: Callable[..., list[tuple[Any, ...]]]
    apply: Callable[[Path], None]
    nul: bool  # whether its text columns hold NUL (PostgreSQL's do not: bytea does)


def _ddl(kind: str, name: str) -> str:
    if kind == "mysql":
        return (f"CREATE TABLE `{name}` (id BIGINT PRIMARY KEY AUTO_INCREMENT, number VARCHAR(16) UNIQUE, "
                "name LONGTEXT, data LONGBLOB, amount DECIMAL(12,2), at DATETIME(6), n INT)")  # fmt: skip
    return (f'CREATE TABLE "{name}" (id BIGSERIAL PRIMARY KEY, number TEXT UNIQUE, name TEXT, data BYTEA, '
            "amount NUMERIC(12,2), at TIMESTAMP, n INTEGER)")  # fmt: skip


@pytest.fixture(params=["mysql", "postgres"])
def side(request: pytest.FixtureRequest, mysql_db: Callable[[str], MySqlDatabase]) -> Iterator[Side]:
    if request.param == "mysql":
        from cupid_airflow.hooks.connections import connection_from_dsn
        from cupid_airflow.hooks.table import CupidMySqlHook

        db = mysql_db("repair")
        hook = CupidMySqlHook(connection=connection_from_dsn(db.dsn, "cupid_repair_test"), log_sql=False)

        def apply_mysql(path: Path) -> None:
            with path.open("rb") as script:
                subprocess.run(
                    ["mysql", "--binary-mode", "-h", MYSQL["host"], "-P", str(MYSQL["port"]), "-u", MYSQL["user"],
                     db.name], stdin=script, check=True, capture_output=True, timeout=60,
                )  # fmt: skip

        yield Side("mysql", lambda name: Table(hook, name, "destination"), db.execute, apply_mysql, nul=True)
        return
    import psycopg2
    from airflow.models.connection import Connection
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    name = f"cupid_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=name)
    conn.autocommit = True

    def execute(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with conn.cursor() as cursor:
            cursor.execute(sql.replace("`", '"'), params)
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []

    def apply_psql(path: Path) -> None:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-v", "ON_ERROR_STOP=1", "-q",
                        "-f", str(path)], check=True, capture_output=True, timeout=60)  # fmt: skip

    pg = Connection(conn_id="cupid_repair_pg", conn_type="postgres", host="127.0.0.1", port=5432, login="postgres",
                    schema=name)  # fmt: skip
    hook = PostgresHook(connection=pg)
    try:
        yield Side("postgres", lambda table: Table(hook, table, "destination"), execute, apply_psql, nul=False)
    finally:
        conn.close()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _rows(side: Side, table: str) -> list[tuple[Any, ...]]:
    """``(number, *COLUMNS)`` by number, bytes as bytes (psycopg2 reads bytea as memoryview)."""
    rows = side.execute(f"SELECT number, {', '.join(COLUMNS)} FROM `{table}` ORDER BY number")
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def _events(side: Side) -> list[Event]:
    """What a reconcile would find between ``src`` and ``user``: types 1, 2 and 3."""
    src = side.execute(f"SELECT id, number, {', '.join(COLUMNS)} FROM `src` ORDER BY number")
    des = _rows(side, "user")
    src = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in src]
    comparer = PairComparer("cupid_repair", "user", "number", COLUMNS, COLUMNS)
    return comparer.diff(src, des)


def _plan(side: Side, events: list[Event]) -> Any:
    keys = [e["byValue"] for e in events]
    with side.table("src") as src, side.table("user") as des:
        src_rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in src.rows_with_keys("number", COLUMNS, keys)]  # fmt: skip
        des_rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                    for r in des.rows_with_keys("number", COLUMNS, keys)]  # fmt: skip
    return plan_repairs(events, src_rows, des_rows, REPAIR)


def _script(side: Side, plan: Any, path: Path) -> Path:
    with side.table("user") as des:
        path.write_bytes(des.fix_script(plan.fixes, "cupid repair test\nsecond line"))
    return path


def _load(side: Side) -> None:
    """Source rows with hostile values; a destination missing some, differing in others, holding
    one the source does not, equal in one."""
    side.execute(_ddl(side.kind, "src"))
    side.execute(_ddl(side.kind, "user").replace("id BIGINT PRIMARY KEY AUTO_INCREMENT, ", "").replace(
        "id BIGSERIAL PRIMARY KEY, ", ""))  # fmt: skip
    nul = "\x00" if side.nul else ""
    at = datetime(2026, 12, 5, 3, 4, 5, 678901)
    rows: list[tuple[Any, ...]] = []
    for i, text in enumerate(HOSTILE):
        data = bytes(range(256)) + b"\x00'\\\"" + text.encode()[:100]
        rows.append((f"k{i}", text + (nul if i == 0 else ""), data, Decimal(f"{i}.05"), at, i))
    rows.append(("nulls", None, None, None, None, None))
    insert = f"INSERT INTO `src` (number, {', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s)"
    for row in rows:
        side.execute(insert, row)
    des_insert = insert.replace("`src`", "`user`")
    side.execute(des_insert, rows[1])  # equal
    side.execute(des_insert, ("k2", "old", b"\x01", Decimal("9.99"), at, 2))  # differs in several columns
    side.execute(des_insert, ("k3", rows[3][1], rows[3][2], rows[3][3], rows[3][4], None))  # NULL where a value is
    side.execute(des_insert, ("nulls", "not null", b"", Decimal(0), at, 0))  # values where NULLs are
    side.execute(des_insert, ("gone", "it's gone", b"\x00", Decimal("1.00"), at, 7))  # not in the source


def test_the_fix_script_applied_by_the_database_client_repairs_exactly_the_divergent_rows(
    side: Side, tmp_path: Path
) -> None:
    _load(side)
    events = _events(side)
    kinds = sorted(Divergence(int(e["type"])).name for e in events)
    assert kinds == ["DIFFERENT"] * 3 + ["GONE"] + ["MISSING"] * 4
    plan = _plan(side, events)
    assert plan.moved == [] and plan.counts() == {"insert": 4, "update": 3, "delete": 1}
    script = _script(side, plan, tmp_path / "fix.sql")
    assert script.read_bytes().startswith(b"-- cupid repair test\n-- second line\n")

    side.apply(script)
    assert _rows(side, "user") == _rows(side, "src")  # every value exactly, NUL, 64 KB and 4-byte UTF-8 too
    assert _events(side) == []
    side.apply(script)  # again: every guard now fails, nothing changes
    assert _rows(side, "user") == _rows(side, "src")


def test_a_row_changed_after_the_compare_is_never_overwritten_nor_deleted(side: Side, tmp_path: Path) -> None:
    _load(side)
    plan = _plan(side, _events(side))
    script = _script(side, plan, tmp_path / "fix.sql")
    # a concurrent writer (replication catching up, a person) moves three rows on before the script runs
    side.execute("UPDATE `user` SET name = 'moved on' WHERE number = 'k2'")
    side.execute("UPDATE `user` SET n = 42 WHERE number = 'gone'")
    side.execute("INSERT INTO `user` (number, name) VALUES ('k4', 'arrived meanwhile')")

    side.apply(script)
    rows = {r[0]: r for r in _rows(side, "user")}
    assert rows["k2"][1] == "moved on" and rows["k2"][2] == b"\x01"  # its update skipped entirely
    assert rows["gone"][5] == 42  # its delete skipped
    assert rows["k4"][1:] == ("arrived meanwhile", None, None, None, None)  # its insert skipped
    src = {r[0]: r for r in _rows(side, "src")}
    assert all(rows[k] == src[k] for k in src if k not in ("k2", "k4"))  # the others repaired


def test_an_event_whose_rows_moved_on_is_not_planned() -> None:
    """Planned from the rows read now: a destination row that changed, a source row with a newer
    version or deleted, or two sides that agree now, are nothing to write."""
    comparer = PairComparer("p", "user", "number", ("name",), ("name",))
    columns = RepairColumns("number", ("name",), "number", ("name",))
    [missing, different] = comparer.compare([(1, "a", "A"), (2, "b", "B")], [("b", "b0")])
    [gone] = comparer.gone(["a", "b"], [("c", "C")])
    now_src = [("a", "A"), ("b", "B")]
    plan = plan_repairs([missing, different, gone], now_src, [("b", "b0"), ("c", "C")], columns)
    assert [f.kind for f in plan.fixes] == [RepairKind.INSERT, RepairKind.UPDATE, RepairKind.DELETE]
    assert plan.fixes[1].values == (("name", "B"),) and plan.fixes[1].guard == (("number", "b"), ("name", "b0"))
    moved = plan_repairs(
        [missing, different, gone],
        [("a", "A2"), ("b", "B")],  # a has a newer version: a candidate of its own
        [("a", "A2"), ("b", "b1"), ("c", "C"), ("c", "C")],  # a arrived; b changed; c twice
        columns,
    )
    assert moved.fixes == [] and moved.moved == [missing["eventId"], different["eventId"], gone["eventId"]]
    agree = plan_repairs([different], [("b", "b0")], [("b", "b0")], columns)
    assert agree.fixes == [] and agree.moved == [different["eventId"]]  # the source's new version is b0
    settled = plan_repairs([different], [("b", "B")], [("b", "B")], columns)
    assert settled.fixes == [] and settled.settled == [different["eventId"]]  # replication got there first


def test_applied_in_transactions_a_row_the_database_refuses_costs_only_itself(side: Side) -> None:
    _load(side)
    side.execute("UPDATE `user` SET n = 99 WHERE number = 'nulls'")  # k0's n (0) is then free
    plan = _plan(side, _events(side))
    side.execute("CREATE UNIQUE INDEX user_n ON `user` (n)")
    side.execute("INSERT INTO `user` (number, n) VALUES ('blocker', 4)")  # k4's insert breaks the index
    with side.table("user") as des:
        if side.kind == "mysql":
            des.hook.multi_statements = True  # type: ignore[attr-defined]  # as the repair's write connection
        table = des.writing()
        results = table.apply(table.fix_statements(plan.fixes))
    refused = [fix.event_id for fix, result in zip(plan.fixes, results, strict=True) if isinstance(result, Exception)]
    assert len(refused) == 1 and all(r is True for r in results if not isinstance(r, Exception))
    rows = {r[0]: r for r in _rows(side, "user")}
    src = {r[0]: r for r in _rows(side, "src")}
    assert "k4" not in rows and rows["blocker"][5] == 4  # refused, nothing of it written
    assert all(rows[k] == src[k] for k in src if k != "k4")  # the rest of the batch committed


def test_a_write_connection_without_rights_fails_naming_side_table_and_server_never_the_password(
    mysql_db: Callable[[str], MySqlDatabase],
) -> None:
    from cupid_airflow.dialects import permanent_reason
    from cupid_airflow.hooks.connections import connection_from_dsn
    from cupid_airflow.hooks.table import CupidMySqlHook

    db = mysql_db("readonly")
    db.execute(_ddl("mysql", "user"))
    user, password = f"cupid_ro_{db.name[-12:]}", "Pw-n0t-sh0wn-8842"
    db.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    try:
        db.execute(f"GRANT SELECT ON `{db.name}`.* TO '{user}'@'%'")
        dsn = f"{user}:{password}@tcp({MYSQL['host']}:{MYSQL['port']})/{db.name}"
        hook = CupidMySqlHook(connection=connection_from_dsn(dsn, "cupid_repair_ro"), log_sql=False)
        with Table(hook, "user", "des[0].repair (connection cupid_write)") as table, pytest.raises(Exception) as caught:
            table.writing().apply([b"DELETE FROM `user` WHERE number = 'x'"])
    finally:
        db.execute(f"DROP USER '{user}'@'%'")
    error = caught.value
    reason = permanent_reason(error)
    assert reason is not None and "1142" in reason  # no retry can fix grants: the task fails at once
    notes = "\n".join(getattr(error, "__notes__", []))
    assert f"des[0].repair (connection cupid_write) table user on {MYSQL['host']}:{MYSQL['port']}/{db.name}" in notes
    assert password not in f"{error}\n{reason}\n{notes}"


def test_progress_keeps_outcomes_masks_and_what_metrics_counted() -> None:
    from cupid_airflow.core.repair import RepairPlan
    from cupid_airflow.core.repair_progress import Outcome, RepairProgress
    from tests.test_core import MemoryStore

    store = MemoryStore()
    progress = RepairProgress("digest", 4, store)
    progress.outcomes[0] = Outcome.APPLIED  # an earlier try's
    progress.flight = [1]  # in flight when that try was killed
    progress.asked, progress.rejected = {1, 2}, {2}
    assert progress.unsent({"repaired": 1}) == {"repaired": 1}
    progress.write()

    again = RepairProgress.read(store, "digest", 4)
    assert (again.outcomes, again.flight, again.asked, again.rejected) == (progress.outcomes, [1], {1, 2}, {2})
    assert again.todo() == [0, 1, 2, 3]  # the applied one is planned again: does it still hold?
    plan = RepairPlan(settled=["e0", "e1", "e3"], moved=["e2"])
    assert again.settle(plan, {"e0": 0, "e1": 1, "e2": 2, "e3": 3}) == 2  # e0 holds, e1 was committed
    assert again.outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.MOVED, Outcome.SETTLED]
    assert again.unsent({"repaired": 2}) == {"repaired": 1}  # a cleared task counts only what is new
    assert RepairProgress.read(store, "another list", 4).outcomes == [Outcome.PENDING] * 4


def test_multi_statement_queries_stay_small() -> None:
    from cupid_airflow.dialects.mysql import QUERY_BYTES, STATEMENTS_PER_QUERY, _queries

    narrow, wide = b"x" * 100, b"y" * (QUERY_BYTES // 3)
    groups = list(_queries([narrow] * 250 + [wide] * 4 + [b"z" * (QUERY_BYTES + 1)]))
    assert [len(g) for g in groups] == [STATEMENTS_PER_QUERY, STATEMENTS_PER_QUERY, 52, 2, 1]
    assert all(sum(len(s) for s in g) <= QUERY_BYTES or len(g) == 1 for g in groups)
