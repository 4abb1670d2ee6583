"""What only the databases know about a config: ``python -m cupid_airflow validate --connect``.

The offline ``validate`` proves the file is well formed; this connects to both sides of every
pair, as the tasks will, and checks what would otherwise fail (or crawl) at the first run: the
credentials, the tables and mapped columns, an integer ``id``, the indexes the scans and lookups
need, matching key types, and a text update column whose values fit ``updateTimeFormate`` and sort
as text. Each finding names the config key to change (a JSON path) and what to do. Messages are
built from names and driver messages only: never a DSN or a password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cupid_airflow.core.compare import ID_COLUMN
from cupid_airflow.core.errors import PermanentError
from cupid_airflow.pair import SyncPair

if TYPE_CHECKING:
    from sqlalchemy.engine.reflection import Inspector

    from cupid_airflow.hooks.table import Table

__all__ = ["Finding", "check_pair"]


@dataclass(frozen=True)
class Finding:
    """One problem (``error``: the pair would fail) or risk (``warning``: it would run, badly)."""

    path: str  # JSON path of the key to change, such as des[0].columns.name
    message: str
    severity: Literal["error", "warning"] = "error"


@dataclass(frozen=True)
class _Column:
    name: str
    family: str  # integer, decimal, float, text, binary, datetime, date, time, other
    type_name: str


def _family(type_name: str) -> str:
    t = type_name.upper()
    for family, words in (
        ("integer", ("INT", "SERIAL")),
        ("decimal", ("DECIMAL", "NUMERIC")),
        ("float", ("FLOAT", "DOUBLE", "REAL")),
        ("binary", ("BINARY", "BLOB", "BYTEA")),
        ("text", ("CHAR", "TEXT", "ENUM", "SET", "CLOB", "UUID", "JSON")),
        ("datetime", ("DATETIME", "TIMESTAMP")),
        ("date", ("DATE",)),
        ("time", ("TIME",)),
    ):
        if any(word in t for word in words):
            return family
    return "other"


class _Side:
    """One side's table as the database describes it."""

    def __init__(self, table: Table, path: str, inspector: Inspector, schema: str | None, name: str) -> None:
        self.table = table
        self.path = path
        columns = inspector.get_columns(name, schema=schema)
        self.columns = {c["name"].lower(): _Column(c["name"], _family(str(c["type"])), str(c["type"])) for c in columns}
        leading: set[str] = set()
        pk = inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
        if pk:
            leading.add(pk[0].lower())
        for index in inspector.get_indexes(name, schema=schema):
            names = index.get("column_names") or []
            if names and names[0]:
                leading.add(str(names[0]).lower())
        for unique in inspector.get_unique_constraints(name, schema=schema):
            if unique.get("column_names"):
                leading.add(str(unique["column_names"][0]).lower())
        self.indexed = leading

    def column(self, name: str) -> _Column | None:
        return self.columns.get(name.lower())

    def listing(self) -> str:
        names = [c.name for c in self.columns.values()]
        return ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")


def _schema_and_name(table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    return schema or None, name


@contextmanager
def _described(table: Table, path: str, findings: list[Finding]) -> Iterator[_Side | None]:
    """The table's columns and indexes, reflected over the table's own connection (so the DSN's
    options and timeouts apply); None, with a finding, when it cannot be reached or read."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import NoSuchTableError

    with table:
        try:
            table.conn  # noqa: B018 (connects: the credentials and the server)
        except Exception as e:
            findings.append(Finding(f"{path}", f"cannot connect to {table.where}: {_reason(e)}"))
            yield None
            return
        url = table.dialect.sqlalchemy_url or table.dialect.name
        engine = create_engine(f"{url}://", creator=lambda: table.conn, pool_reset_on_return=None)
        schema, name = _schema_and_name(table.name)
        try:
            side = _Side(table, path, inspect(engine), schema, name)
        except NoSuchTableError:
            findings.append(Finding(_table_path(path), f"no such table: {table.where}"))
            yield None
            return
        except Exception as e:
            findings.append(Finding(_table_path(path), f"cannot read the definition of {table.where}: {_reason(e)}"))
            yield None
            return
        if not side.columns:  # some dialects reflect a missing table as no columns
            findings.append(Finding(_table_path(path), f"no such table: {table.where}"))
            yield None
            return
        yield side


def _table_path(side_path: str) -> str:
    return f"{side_path.rsplit('.', 1)[0]}.table"


def _reason(error: BaseException) -> str:
    """The driver's words (they name users and hosts, never passwords), on one line."""
    args: tuple[Any, ...] = getattr(error, "args", ())
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(error)
    return " ".join(text.split())[:300] or type(error).__name__


def check_pair(pair: SyncPair) -> list[Finding]:
    """Everything wrong with ``pair`` that only its databases can tell."""
    findings: list[Finding] = []
    des = f"des[{pair.index}]"
    src_endpoint = "src.dsn" if pair.src.dsn is not None else "src.connId"
    des_endpoint = f"{des}.dsn" if pair.des.dsn is not None else f"{des}.connId"
    source_table, destination_table = pair.source_table(), pair.destination_table()
    with (
        _described(source_table, src_endpoint, findings) as source,
        _described(destination_table, des_endpoint, findings) as destination,
    ):
        if source is not None:
            findings += _source_findings(pair, source)
        if destination is not None:
            findings += _destination_findings(pair, destination)
        if source is not None and destination is not None:
            findings += _pair_findings(pair, source, destination)
    return findings


def _source_findings(pair: SyncPair, source: _Side) -> list[Finding]:
    findings: list[Finding] = []
    where = source.table.where
    identity = source.column(ID_COLUMN)
    if pair.src.insert or pair.src.update:
        if identity is None:
            findings.append(
                Finding(
                    "src.table",
                    f"{where} has no `id` column; cupid scans new rows by an integer `id`: "
                    "add one, or set src.insert to false",
                )
            )
        elif identity.family != "integer":
            findings.append(
                Finding(
                    "src.table",
                    f"`id` of {where} is {identity.type_name}; cupid needs an integer `id` "
                    "(auto-increment) to scan new rows, or set src.insert to false",
                )
            )
        elif ID_COLUMN not in source.indexed:
            findings.append(
                Finding(
                    "src.table",
                    f"`id` of {where} has no index: every scan reads the whole table; make it the primary key",
                    "warning",
                )
            )
    if source.column(pair.src.by_column) is None:
        findings.append(_missing("src.byColumn", pair.src.by_column, source))
    elif pair.reconcile is not None and pair.src.by_column.lower() not in source.indexed:
        findings.append(
            Finding(
                "src.byColumn",
                f"`{pair.src.by_column}` of {where} has no index: reconcile walks the source "
                "in ranges of it and reads the whole table for each; add an index",
                "warning",
            )
        )
    for src_column in pair.src_columns:
        if source.column(src_column) is None:
            findings.append(_missing(f"des[{pair.index}].columns.{src_column}", src_column, source))
    if pair.src.update and pair.src.update_column:
        findings += _update_column_findings(pair, source)
    return findings


def _update_column_findings(pair: SyncPair, source: _Side) -> list[Finding]:
    column_name = pair.src.update_column
    assert column_name is not None
    column = source.column(column_name)
    if column is None:
        return [_missing("src.updateColumn", column_name, source)]
    findings: list[Finding] = []
    where = source.table.where
    if column_name.lower() not in source.indexed:
        findings.append(
            Finding(
                "src.updateColumn",
                f"`{column_name}` of {where} has no index: every update scan, and every poll of the "
                "watcher (each 2 s by default), reads the whole table; add one",
                "warning",
            )
        )
    try:
        pair.column_time(source.table)  # the type, and a text format that sorts
    except PermanentError as e:
        return [*findings, Finding("src.updateTimeFormate" if column.family == "text" else "src.updateColumn", str(e))]
    if column.family == "text":
        low, high = source.table.min_max(column_name)
        fmt = pair.src.time_format
        odd = [str(v) for v in (low, high) if v is not None and not fmt.matches(str(v))]
        if odd:
            findings.append(
                Finding(
                    "src.updateTimeFormate",
                    f"`{column_name}` of {where} holds {odd[0]!r}, which is not in "
                    f"{fmt.text!r}: such rows sort out of place and update windows miss them; fix the "
                    "values or the format",
                )
            )
    return findings


def _destination_findings(pair: SyncPair, destination: _Side) -> list[Finding]:
    findings: list[Finding] = []
    des = f"des[{pair.index}]"
    by_column = pair.des.by_column
    if destination.column(by_column) is None:
        findings.append(_missing(f"{des}.byColumn", by_column, destination))
    elif by_column.lower() not in destination.indexed:
        findings.append(
            Finding(
                f"{des}.byColumn",
                f"`{by_column}` of {destination.table.where} has no index: each lookup "
                "of a batch of keys reads the whole table; add a (unique) index",
                "warning",
            )
        )
    for src_column, des_column in pair.des.columns.items():
        if destination.column(des_column) is None:
            findings.append(_missing(f"{des}.columns.{src_column}", des_column, destination))
    return findings


def _pair_findings(pair: SyncPair, source: _Side, destination: _Side) -> list[Finding]:
    src_key, des_key = source.column(pair.src.by_column), destination.column(pair.des.by_column)
    if src_key is None or des_key is None or src_key.family == des_key.family:
        return []
    return [
        Finding(
            f"des[{pair.index}].byColumn",
            f"the keys differ in type: src `{src_key.name}` is {src_key.type_name}, des `{des_key.name}` is "
            f"{des_key.type_name}; the database converts them to compare (an index may go unused, and '007' "
            "matches 7); give both the same type",
            "warning",
        )
    ]


def _missing(path: str, column: str, side: _Side) -> Finding:
    return Finding(path, f"no column `{column}` in {side.table.where}; it has: {side.listing()}")
