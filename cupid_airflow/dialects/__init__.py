"""One class per kind of database (:class:`~cupid_airflow.dialects.base.Dialect`): MySQL and
MariaDB, PostgreSQL, SQLite, and the plain base for any other common-sql database. Nothing outside
this package branches on the kind of database."""

from __future__ import annotations

from cupid_airflow.core.errors import PermanentError
from cupid_airflow.dialects.base import Dialect
from cupid_airflow.dialects.mysql import MySqlDialect
from cupid_airflow.dialects.postgres import PostgresDialect
from cupid_airflow.dialects.sqlite import SqliteDialect

__all__ = [
    "DSN_DIALECT",
    "Dialect",
    "MySqlDialect",
    "PostgresDialect",
    "SqliteDialect",
    "dialect_for",
    "permanent_reason",
]

_KNOWN: dict[str, type[Dialect]] = {d.conn_type: d for d in (MySqlDialect, PostgresDialect, SqliteDialect)}
#: What a cupid-go DSN (``user:password@tcp(host:port)/db``) connects to.
DSN_DIALECT = MySqlDialect


def dialect_for(conn_type: str) -> Dialect:
    """The dialect of an Airflow connection type (the plain :class:`Dialect` for one cupid knows
    nothing special of)."""
    known = _KNOWN.get(conn_type)
    return known() if known is not None else Dialect(conn_type)


def permanent_reason(error: BaseException) -> str | None:
    """Why ``error`` fails every try alike (a missing column, a key type cupid cannot carry, wrong
    credentials), or None when a retry might succeed. Each dialect recognises its driver's errors
    by what they carry, so no driver is imported."""
    if isinstance(error, PermanentError):
        return str(error)
    for dialect in _KNOWN.values():
        reason = dialect.permanent_reason(error)
        if reason is not None:
            return reason
    return None
