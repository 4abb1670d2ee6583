"""Which failures no retry can fix.

A missing column, a key type cupid cannot carry, an update column in a format that does not sort:
running the task again gives the same error, so spending retries (hours, with callback backoff)
only delays the alert. Operators turn these into Airflow's fail-for-good exception; everything
else (a dropped connection, a lock wait, a server restart) stays retryable.
"""

from __future__ import annotations

__all__ = ["PermanentError", "TimeColumnError", "UnsupportedValueError", "permanent_reason"]


class PermanentError(Exception):
    """The task would fail the same way on every try: fix the config or the tables first."""


class UnsupportedValueError(PermanentError, TypeError):
    """A key or boundary value of a type cupid cannot carry between tasks (XCom, state stores)."""


class TimeColumnError(PermanentError, ValueError):
    """``src.updateColumn`` stores time in a way cupid cannot range-scan or compare."""


#: MySQL/MariaDB server errors that describe the schema, the grants or the credentials, not the
#: moment: 1044/1142/1143 access denied to a database/table/column, 1045 wrong user or password
#: (the config is read again by the next run, not by a retry), 1049 unknown database, 1054 unknown
#: column, 1064 SQL syntax (an identifier the server reads differently), 1146 no such table.
_MYSQL_CODES = frozenset({1044, 1045, 1049, 1054, 1064, 1142, 1143, 1146})
#: PostgreSQL SQLSTATEs of the same kind: undefined column/table/database, insufficient privilege,
#: undefined function (a dialect feature the server lacks), datatype mismatch in a comparison,
#: invalid password or authorization.
_POSTGRES_STATES = frozenset({"42703", "42P01", "3D000", "42501", "42883", "42804", "28P01", "28000"})
_SQLITE_MESSAGES = ("no such column", "no such table")


def error_notes(error: BaseException) -> str:
    """The notes added to an error on its way up (which table, which server), in one line."""
    return "; ".join(getattr(error, "__notes__", []))


def permanent_reason(error: BaseException) -> str | None:
    """Why ``error`` is permanent, or None when a retry might succeed.

    Drivers are recognised by what their exceptions carry (MySQLdb's numeric code, psycopg's
    ``pgcode``, sqlite3's message), so this module imports none of them.
    """
    if isinstance(error, PermanentError):
        return str(error)
    args = getattr(error, "args", ())
    module = type(error).__module__
    if module.startswith(("MySQLdb", "pymysql", "mysql")) and args and isinstance(args[0], int):
        return f"MySQL error {args[0]}: {args[1] if len(args) > 1 else ''}" if args[0] in _MYSQL_CODES else None
    pgcode = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    if isinstance(pgcode, str):
        return f"PostgreSQL error {pgcode}: {str(error).strip()}" if pgcode in _POSTGRES_STATES else None
    if module == "sqlite3" and any(m in str(error) for m in _SQLITE_MESSAGES):
        return f"SQLite: {error}"
    return None
