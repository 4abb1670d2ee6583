"""SQLite: the demo's database, and a destination for tests; no hash function, so a reconcile
reads every chunk."""

from __future__ import annotations

from typing import ClassVar

from cupid_airflow.dialects.base import Dialect

__all__ = ["SqliteDialect"]

_MESSAGES = ("no such column", "no such table")


class SqliteDialect(Dialect):
    conn_type: ClassVar[str] = "sqlite"
    #: A connection belongs to the thread that opened it.
    thread_safe: ClassVar[bool] = False

    @classmethod
    def permanent_reason(cls, error: BaseException) -> str | None:
        if type(error).__module__ == "sqlite3" and any(m in str(error) for m in _MESSAGES):
            return f"SQLite: {error}"
        return None

    def lineage_id(self, host: str | None, port: int | None, database: str | None, table: str) -> tuple[str, str]:
        """Not in OpenLineage's naming spec: ``sqlite://`` and the database file's path, as in its
        SQLAlchemy URI, and the table."""
        return f"sqlite://{host or ''}", table
