"""PostgreSQL, through common-sql's PostgresHook (psycopg2)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any, ClassVar

from cupid_airflow.dialects.base import LOCK_WAIT_SECONDS, Dialect

__all__ = ["PostgresDialect"]

#: SQLSTATEs that describe the schema, the grants or the credentials: undefined column, table or
#: database, insufficient privilege, undefined function (a feature the server lacks), datatype
#: mismatch in a comparison, invalid password or authorization; for repairs, a read-only
#: transaction (a standby, ``default_transaction_read_only``).
PERMANENT_STATES = frozenset({"42703", "42P01", "3D000", "42501", "42883", "42804", "28P01", "28000", "25006"})


class PostgresDialect(Dialect):
    conn_type: ClassVar[str] = "postgres"
    sqlalchemy_url: ClassVar[str | None] = "postgresql+psycopg2"
    default_port: ClassVar[int | None] = 5432

    def prepare_writes(self, conn: Any) -> None:
        conn.autocommit = True  # SET outside a transaction: it holds for the session
        with closing(conn.cursor()) as cursor:
            cursor.execute(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")
        conn.autocommit = False

    def stream_cursor(self, conn: Any, batch_size: int) -> Any:
        cursor = conn.cursor(name="cupid_stream")  # a named cursor is a server-side one
        cursor.itersize = batch_size
        return cursor

    def row_text(self, columns: Sequence[str]) -> str:
        parts = [f"COALESCE(CAST({c} AS TEXT), chr(30))" for c in columns]
        return f"concat_ws(chr(31), {', '.join(parts)})"

    def row_hash(self, text: str) -> str:
        return f"('x' || left(encode(sha256(convert_to({text}, 'UTF8')), 'hex'), 16))::bit(64)::bigint::numeric"

    script_preamble: ClassVar[bytes] = b"SET client_encoding = 'UTF8';\n"

    def literal(self, conn: Any, value: Any) -> bytes:
        """psycopg's ``sql.Literal`` (the provider connects with psycopg 3 when it is installed),
        else psycopg2's ``adapt``: either escapes for the connection's encoding."""
        if not type(conn).__module__.startswith("psycopg2"):
            from psycopg import sql

            return bytes(sql.Literal(value).as_bytes(conn))
        from psycopg2.extensions import adapt

        adapted = adapt(value)
        if hasattr(adapted, "prepare"):
            adapted.prepare(conn)
        return bytes(adapted.getquoted())

    def null_safe_equal(self, column: str, literal: bytes) -> bytes:
        return column.encode() + b" IS NOT DISTINCT FROM " + literal

    def guarded_insert(
        self, table: str, columns: Sequence[str], literals: Sequence[bytes], key: str, key_literal: bytes
    ) -> bytes:
        # MERGE, not INSERT ... SELECT ... WHERE NOT EXISTS: a SELECT list types a quoted literal
        # as text, which an integer column refuses; INSERT ... VALUES types it as its column
        return (
            b"MERGE INTO " + table.encode() + b" USING (SELECT 1) AS cupid_one ON " + table.encode() + b"."
            + key.encode() + b" = " + key_literal + b" WHEN NOT MATCHED THEN INSERT ("
            + ", ".join(columns).encode() + b") VALUES (" + b", ".join(literals) + b")"
        )  # fmt: skip

    @classmethod
    def permanent_reason(cls, error: BaseException) -> str | None:
        state = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
        if isinstance(state, str) and state in PERMANENT_STATES:
            return f"PostgreSQL error {state}: {str(error).strip()}"
        return None

    def lineage_id(self, host: str | None, port: int | None, database: str | None, table: str) -> tuple[str, str]:
        """``database.schema.table``; a bare table is in the search path's ``public``."""
        namespace, _ = super().lineage_id(host, port, None, table)
        parts = table.split(".")
        qualified = [*([database] if database else []), *(["public"] if len(parts) == 1 else []), *parts]
        return namespace, ".".join(qualified)
