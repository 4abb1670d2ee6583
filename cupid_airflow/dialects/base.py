"""What cupid needs to know of one kind of database, in one class per kind: the SQL it writes
there beyond common-sql's (the reconcile checksum), how its driver connects and streams, which of
its errors no retry fixes, what SQLAlchemy and OpenLineage call it.

:class:`Dialect` is also the answer for a kind cupid knows nothing special of (any other
common-sql ``DbApiHook``): no checksum (chunks are read row by row), client-side cursors, every
error retryable, the connection type as its OpenLineage scheme. Adding a database is one subclass
of this and its tests; :func:`cupid_airflow.dialects.dialect_for` finds it by connection type.

The reconcile checksum, the same on every database: ``COUNT(*)`` and the sum, modulo 2**64, of
the first 64 bits of each row's SHA-256 over the key and the mapped columns rendered as text in a
fixed way (NULL has its own marker, CHAR(30), and columns a separator, CHAR(31); neither is
escaped, so only values that themselves hold those control characters could make two different
rows render alike). The key is part of the text so values moved between keys are seen; a sum
cannot be cancelled by a duplicate the way an XOR of CRC32s is. SHA-256, not MD5 (reladiff's
choice): MariaDB 10.11 computes MD5 through a slow path, 0.75 s per 1,000,000 rows against
0.2 s for SHA2, and PostgreSQL has both built in at about the same cost (sha256 7% slower
there). ``python bench/reconcile.py`` measures the whole effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from cupid_airflow.core.errors import PermanentError
from cupid_airflow.dsn import qualified_table

__all__ = ["CHECKSUM_MODULUS", "Dialect"]

#: Sums of row hashes are compared modulo this: MySQL sums unsigned lanes, PostgreSQL signed ones.
CHECKSUM_MODULUS = 2**64


#: The longest a repair waits for a row lock (a writer holding the row): then the try fails and its
#: retry goes on, instead of waiting out the server's default (50 s on MySQL, forever on PostgreSQL).
LOCK_WAIT_SECONDS = 30


class Dialect:
    """A database cupid knows nothing special of; subclasses say what differs."""

    #: Airflow's connection type.
    conn_type: ClassVar[str] = ""
    #: The SQLAlchemy URL prefix that reflects its tables (``validate --connect``); None: the
    #: connection type is also SQLAlchemy's dialect name.
    sqlalchemy_url: ClassVar[str | None] = None
    #: The port OpenLineage names when the connection has none.
    default_port: ClassVar[int | None] = None
    #: Whether a connection may be used from a thread other than the one that opened it.
    thread_safe: ClassVar[bool] = True

    def __init__(self, conn_type: str = "") -> None:
        self.name = self.conn_type or conn_type

    # ------------------------------------------------------------------ connections

    def prepare(self, conn: Any) -> None:
        """Set up a new connection for cupid's reads."""

    def stream_cursor(self, conn: Any, batch_size: int) -> Any:
        """A cursor that streams a large result (server-side where the driver has one)."""
        return conn.cursor()

    def prepare_writes(self, conn: Any) -> None:
        """Set up a connection that applies repairs: transactions cupid commits, and a bounded
        wait for a row lock (:data:`LOCK_WAIT_SECONDS`)."""
        conn.autocommit = False

    def run_statements(self, cursor: Any, statements: Sequence[bytes], multi: bool) -> list[int]:
        """Run ``statements``; the rows each changed. ``multi``: the connection takes several
        statements per query."""
        counts = []
        for statement in statements:
            cursor.execute(statement)
            counts.append(cursor.rowcount)
        return counts

    @staticmethod
    def row_error(error: BaseException) -> bool:
        """Whether ``error`` is one statement's own (a constraint, a value its column refuses),
        not the connection's, the grants' or the server's: DB-API's IntegrityError and DataError,
        by name, so no driver is imported."""
        return any(c.__name__ in ("IntegrityError", "DataError") for c in type(error).__mro__)

    # ------------------------------------------------------------------ the reconcile checksum

    def row_text(self, columns: Sequence[str]) -> str | None:
        """SQL for one row's text (columns quoted), the same on every database for the same
        values (as far as each renders DECIMAL and DATETIME alike: a difference only costs a
        row-by-row read); None where there is no hash function."""
        return None

    def row_hash(self, text: str) -> str:
        """SQL for the first 64 bits of SHA-256 of ``text``, as a number."""
        raise NotImplementedError

    def checksum_sql(self, table: str, columns: Sequence[str], where: str) -> str | None:
        """``SELECT count, sum`` over the rows of ``table`` matching ``where``, or None when the
        database has no hash function: then every chunk is read row by row. ``table`` and
        ``columns`` are quoted already; ``where`` uses bound parameters."""
        text = self.row_text(columns)
        if text is None:
            return None
        return f"SELECT COUNT(*), SUM({self.row_hash(text)}) FROM {table} WHERE {where}"

    @staticmethod
    def fold_checksum(row: Sequence[Any] | None) -> tuple[int, int]:
        """``(count, sum mod 2**64)`` of a checksum row: alike on every database."""
        if not row:
            return (0, 0)
        return (int(row[0] or 0), int(row[1] or 0) % CHECKSUM_MODULUS)

    # ------------------------------------------------------------------ repairs (fix SQL)
    # Statements as bytes: values are rendered by the driver's own literal escaping, in the
    # connection's character set (a BLOB's bytes need not be text). Identifiers come quoted.

    #: What a script of repairs starts with (the character set its literals are written in).
    script_preamble: ClassVar[bytes] = b""

    def literal(self, conn: Any, value: Any) -> bytes:
        """``value`` as an SQL literal, escaped by the driver for ``conn``."""
        raise PermanentError(f"cupid writes repairs for MySQL, MariaDB and PostgreSQL, not for {self.name or 'this'} "
                             "connections")  # fmt: skip

    def null_safe_equal(self, column: str, literal: bytes) -> bytes:
        """``column`` holds ``literal``, NULL equal to NULL."""
        raise NotImplementedError

    def guarded_insert(
        self, table: str, columns: Sequence[str], literals: Sequence[bytes], key: str, key_literal: bytes
    ) -> bytes:
        """An INSERT of one row that inserts nothing when a row already holds the key."""
        raise NotImplementedError

    def guarded_update(
        self, table: str, values: Sequence[tuple[str, bytes]], guard: Sequence[tuple[str, bytes]]
    ) -> bytes:
        """An UPDATE of the row holding ``guard`` (its key first: never NULL, so a plain ``=``)."""
        sets = b", ".join(c.encode() + b" = " + v for c, v in values)
        return b"UPDATE " + table.encode() + b" SET " + sets + b" WHERE " + self._guard(guard)

    def guarded_delete(self, table: str, guard: Sequence[tuple[str, bytes]]) -> bytes:
        return b"DELETE FROM " + table.encode() + b" WHERE " + self._guard(guard)

    def _guard(self, guard: Sequence[tuple[str, bytes]]) -> bytes:
        (key, key_literal), rest = guard[0], guard[1:]
        return b" AND ".join([key.encode() + b" = " + key_literal, *(self.null_safe_equal(c, v) for c, v in rest)])

    # ------------------------------------------------------------------ errors

    @classmethod
    def permanent_reason(cls, error: BaseException) -> str | None:
        """Why ``error`` (one of this database's driver errors) fails every try alike, or None."""
        return None

    # ------------------------------------------------------------------ names

    def lineage_id(self, host: str | None, port: int | None, database: str | None, table: str) -> tuple[str, str]:
        """``(namespace, name)`` of a table, as OpenLineage's naming spec has it: the server from
        the host and port alone (never credentials), the table qualified by its database."""
        port = port or self.default_port
        namespace = f"{self.name}://{host or 'localhost'}" + (f":{port}" if port else "")
        return namespace, qualified_table(database, table)
