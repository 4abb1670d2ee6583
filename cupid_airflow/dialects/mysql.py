"""MySQL and MariaDB: cupid's own target (a cupid-go DSN always means one)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from typing import Any, ClassVar

from cupid_airflow.dialects.base import LOCK_WAIT_SECONDS, Dialect

__all__ = ["MySqlDialect"]

_SEP, _NULL = "CHAR(31)", "CHAR(30)"
#: Repair statements per query on a multi-statement connection, and the most bytes of SQL in one:
#: a round trip per 100 rows instead of each, and far below max_allowed_packet (16 MB by default)
#: whatever the rows' width (a statement larger than this goes alone).
STATEMENTS_PER_QUERY = 100
QUERY_BYTES = 1 << 20
#: Server errors that describe the schema, the grants or the credentials, not the moment:
#: 1044/1142/1143 access denied to a database/table/column, 1045 wrong user or password (the
#: config is read again by the next run, not by a retry), 1049 unknown database, 1054 unknown
#: column, 1064 SQL syntax (an identifier the server reads differently), 1146 no such table;
#: for repairs, 1290 and 1836 a read-only server (``--read-only``, a replica), 1792 a read-only
#: transaction.
PERMANENT_CODES = frozenset({1044, 1045, 1049, 1054, 1064, 1142, 1143, 1146, 1290, 1792, 1836})


class MySqlDialect(Dialect):
    conn_type: ClassVar[str] = "mysql"
    sqlalchemy_url: ClassVar[str | None] = "mysql+mysqldb"
    default_port: ClassVar[int | None] = 3306

    def prepare(self, conn: Any) -> None:
        # Each read sees the latest committed rows, and no snapshot is held open for hours.
        conn.autocommit(True)

    def prepare_writes(self, conn: Any) -> None:
        conn.autocommit(False)
        with closing(conn.cursor()) as cursor:
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}")

    def run_statements(self, cursor: Any, statements: Sequence[bytes], multi: bool) -> list[int]:
        """With ``multi`` (CLIENT.MULTI_STATEMENTS), :data:`STATEMENTS_PER_QUERY` a round trip:
        each statement's row count comes as its own result. A failing statement ends the query
        with its error: the caller rolls the batch back."""
        if not multi:
            return super().run_statements(cursor, statements, multi)
        counts: list[int] = []
        for group in _queries(statements):
            cursor.execute(b";\n".join(group))
            counts.append(cursor.rowcount)
            while cursor.nextset():
                counts.append(cursor.rowcount)
        return counts

    def stream_cursor(self, conn: Any, batch_size: int) -> Any:
        import MySQLdb.cursors

        return conn.cursor(MySQLdb.cursors.SSCursor)

    def row_text(self, columns: Sequence[str]) -> str:
        # COALESCE with a string renders numbers and times as text itself; an explicit CAST costs
        # a fifth of the checksum's time on 1,000,000 rows.
        parts = [f"COALESCE({c}, {_NULL})" for c in columns]
        return f"CONCAT_WS({_SEP}, {', '.join(parts)})"

    def row_hash(self, text: str) -> str:
        return f"CAST(CONV(LEFT(SHA2({text}, 256), 16), 16, 10) AS UNSIGNED)"

    script_preamble: ClassVar[bytes] = b"SET NAMES utf8mb4;\n"

    def literal(self, conn: Any, value: Any) -> bytes:
        return bytes(conn.literal(value))

    def null_safe_equal(self, column: str, literal: bytes) -> bytes:
        return column.encode() + b" <=> " + literal

    def guarded_insert(
        self, table: str, columns: Sequence[str], literals: Sequence[bytes], key: str, key_literal: bytes
    ) -> bytes:
        # INSERT ... SELECT may read its own table (MySQL and MariaDB copy what it reads first)
        return (
            b"INSERT INTO " + table.encode() + b" (" + ", ".join(columns).encode() + b") SELECT "
            + b", ".join(literals) + b" FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM " + table.encode()
            + b" WHERE " + key.encode() + b" = " + key_literal + b")"
        )  # fmt: skip

    @classmethod
    def permanent_reason(cls, error: BaseException) -> str | None:
        """MySQLdb's, PyMySQL's and mysql-connector's errors carry the server's numeric code first
        (recognised by their module: no driver is imported here)."""
        args = getattr(error, "args", ())
        if not type(error).__module__.startswith(("MySQLdb", "pymysql", "mysql")) or not args:
            return None
        if isinstance(args[0], int) and args[0] in PERMANENT_CODES:
            return f"MySQL error {args[0]}: {args[1] if len(args) > 1 else ''}"
        return None


def _queries(statements: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """``statements`` in groups of at most :data:`STATEMENTS_PER_QUERY` and :data:`QUERY_BYTES`."""
    group: list[bytes] = []
    size = 0
    for statement in statements:
        if group and (len(group) == STATEMENTS_PER_QUERY or size + len(statement) > QUERY_BYTES):
            yield group
            group, size = [], 0
        group.append(statement)
        size += len(statement) + 2
    if group:
        yield group
