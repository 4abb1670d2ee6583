"""One table behind a common-sql ``DbApiHook``: with :mod:`cupid_airflow.dialects` (the SQL and
driver facts that differ by database), the only place cupid writes SQL.

Identifiers are validated by the config loader and quoted here with the hook's own quoting; values
are always bound parameters in the hook's placeholder style. Reads stream through server-side
cursors where the driver has them, so memory stays flat whatever the table size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing, suppress
from typing import Any

from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.providers.mysql.hooks.mysql import MySqlHook
from airflow.sdk import BaseHook

from cupid_airflow.config import Destination, Source
from cupid_airflow.core.codec import decode_value
from cupid_airflow.core.compare import ID_COLUMN
from cupid_airflow.core.partitions import Partition
from cupid_airflow.core.repair import Fix, RepairKind
from cupid_airflow.dialects import Dialect, MySqlDialect, dialect_for
from cupid_airflow.hooks.connections import connection_from_dsn

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "ID_COLUMN",
    "READ_TIMEOUT_SECONDS",
    "WRITE_TIMEOUT_SECONDS",
    "CupidMySqlHook",
    "Table",
    "connection_hook",
    "db_hook",
    "key_range",
]


#: Seconds to connect, the server's greeting included: a server that accepts TCP and never
#: answers (hung, or a half-dead proxy in front of it) fails the try instead of hanging it.
CONNECT_TIMEOUT_SECONDS = 10
#: Seconds to wait for any one read. The longest legitimate wait is a reconcile checksum query,
#: sized to ``targetQuerySeconds`` (at most 600 s) but possibly slower when the first estimate is
#: off; everything else cupid asks (index walks, a streamed range on the primary key, IN lookups)
#: sends its first row in seconds. 900 s is half again the largest target: a bound on a dead
#: server that no real query reaches. (libmysqlclient tries a read up to 3 times, so a wait may last 3x this.)
READ_TIMEOUT_SECONDS = 900
#: Seconds to send one statement: cupid's largest is an IN list of one batch of keys; a server
#: that does not take that in 2 minutes is gone.
WRITE_TIMEOUT_SECONDS = 120


class CupidMySqlHook(MySqlHook):
    """MySqlHook with connect/read/write timeouts: the connection's extras win (a Go DSN's
    ``timeout``, ``readTimeout`` and ``writeTimeout`` land there), else the defaults above, so a
    dead server fails a task in bounded time instead of hanging it. Applies to the default
    mysqlclient driver (mysql-connector-python's ``connection_timeout`` bounds every read, so no
    default is set there: set it in the connection's extras)."""

    #: A cap on the read timeout, whatever the extras or the default say: the watch trigger's
    #: queries answer in milliseconds, so it waits at most this long.
    read_timeout_seconds: int | None = None
    #: Several statements per query (the repair's write connection alone: its statements are
    #: cupid's, values escaped by the driver): a batch of repairs costs a few round trips, not one each.
    multi_statements: bool = False

    def _get_conn_config_mysql_client(self, conn: Any) -> dict[str, Any]:
        config: dict[str, Any] = super()._get_conn_config_mysql_client(conn)
        defaults = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
            "write_timeout": WRITE_TIMEOUT_SECONDS,
        }
        for key, default in defaults.items():
            config[key] = int(conn.extra_dejson[key]) if key in conn.extra_dejson else default
        if self.read_timeout_seconds is not None:
            config["read_timeout"] = min(config["read_timeout"], self.read_timeout_seconds)
        if self.multi_statements:
            from MySQLdb.constants import CLIENT

            config["client_flag"] = config.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS
        return config


#: cupid's own hook for a connection type, where it needs more than the provider's (timeouts).
_OWN_HOOKS = {MySqlDialect.conn_type: CupidMySqlHook}


def db_hook(endpoint: Source | Destination, conn_id: str, read_timeout: int | None = None) -> DbApiHook:
    """The hook for a config endpoint: its Airflow connection, or its DSN as an in-memory one
    (named ``conn_id``). ``read_timeout`` caps the read timeout of MySQL hooks (default and extras
    alike)."""
    return _hook(endpoint.dsn, endpoint.conn_id, conn_id, read_timeout)


def connection_hook(conn_id: str) -> DbApiHook:
    """The hook for an Airflow connection a config names on its own (``repair.connId``)."""
    return _hook(None, conn_id, conn_id, None)


def _hook(dsn: str | None, airflow_conn_id: str | None, dsn_conn_id: str, read_timeout: int | None) -> DbApiHook:
    mysql: CupidMySqlHook | None = None
    if dsn is not None:
        mysql = CupidMySqlHook(connection=connection_from_dsn(dsn, dsn_conn_id), log_sql=False)
    else:
        assert airflow_conn_id is not None
        connection = BaseHook.get_connection(airflow_conn_id)
        if _OWN_HOOKS.get(connection.conn_type or "") is CupidMySqlHook:
            mysql = CupidMySqlHook(mysql_conn_id=airflow_conn_id, log_sql=False)
    if mysql is not None:
        if read_timeout is not None:
            mysql.read_timeout_seconds = read_timeout
        return mysql
    hook = connection.get_hook()  # type: ignore[no-untyped-call]
    if not isinstance(hook, DbApiHook):
        raise TypeError(
            f"connection {airflow_conn_id!r} is of type {connection.conn_type!r}, which is not a SQL database"
        )
    return hook


class Table:
    """A table reached through a DbApiHook, with one open connection reused for every query."""

    def __init__(self, hook: DbApiHook, name: str, side: str = "") -> None:
        self.hook = hook
        self.name = name
        self.side = side
        self.dialect: Dialect = dialect_for(hook.conn_type)
        self._quote_format = hook.escape_word_format
        self.placeholder = hook.placeholder
        self.quoted = ".".join(self.quote(part) for part in name.split("."))
        self._conn: Any = None
        self._borrowed = False  # the connection is another Table's (see sibling)

    @property
    def thread_safe(self) -> bool:
        """Whether the connection may be used from a thread other than its creator's (not SQLite's)."""
        return self.dialect.thread_safe

    def quote(self, identifier: str) -> str:
        return self._quote_format.format(identifier)

    def placeholders(self, count: int) -> str:
        return ", ".join([self.placeholder] * count)

    @property
    def where(self) -> str:
        """``side table on host:port/database``, for error messages: never the credentials."""
        connection: Any = getattr(self.hook, "connection", None)
        if connection is None:
            try:
                connection = self.hook.get_connection(self.hook.get_conn_id())
            except Exception:
                connection = None
        place = ""
        if connection is not None:
            host = connection.host or ""
            port = f":{connection.port}" if connection.port else ""
            place = f" on {host}{port}/{connection.schema or ''}"
        return f"{self.side + ' ' if self.side else ''}table {self.name}{place}"

    def _noted(self, error: BaseException) -> None:
        """Say which side, table and server a driver error came from (drivers name none of them)."""
        note = f"cupid: {self.where}"
        if note not in getattr(error, "__notes__", []):
            error.add_note(note)

    @property
    def conn(self) -> Any:
        if self._conn is None:
            try:
                self._conn = self.hook.get_conn()
            except Exception as e:
                self._noted(e)
                raise
            self.dialect.prepare(self._conn)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            if not self._borrowed:
                self._conn.close()
            self._conn = None

    def sibling(self, name: str, side: str = "") -> Table:
        """Another table of the same database over this table's connection (connecting now if it
        has not): closing the sibling leaves the connection open; closing this table closes it."""
        other = Table(self.hook, name, side)
        other._conn, other._borrowed = self.conn, True
        return other

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with closing(self.conn.cursor()) as cursor:
                cursor.execute(sql, tuple(params))
                return [tuple(row) for row in cursor.fetchall()]
        except Exception as e:
            self._noted(e)
            raise

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.fetch_all(sql, params)
        return rows[0][0] if rows else None

    def stream(self, sql: str, params: Sequence[Any], batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        """Rows in batches, from a server-side cursor where the driver has one."""
        with closing(self.dialect.stream_cursor(self.conn, batch_size)) as cursor:
            try:
                cursor.execute(sql, tuple(params))
                while rows := cursor.fetchmany(batch_size):
                    yield rows
            except Exception as e:
                self._noted(e)
                raise

    # ------------------------------------------------------------------ queries cupid needs

    def max_id(self) -> int | None:
        return self.scalar(f"SELECT MAX({self.quote(ID_COLUMN)}) FROM {self.quoted}")

    def newest(self, ids: bool, update_column: str | None, count_limit: int = 1000) -> tuple[Any, Any, Any]:
        """``(MAX(id), MAX(update_column), rows holding that maximum)``; a part not asked for is
        None. With the columns indexed the server answers the maxima from the index ends ("Select
        tables optimized away") and counts at most ``count_limit`` index entries: what the watch
        trigger can afford every 2 s, also after a bulk update stamped a million rows alike."""
        max_id = f"(SELECT MAX({self.quote(ID_COLUMN)}) FROM {self.quoted})" if ids else "NULL"
        if update_column is None:
            return self.fetch_all(f"SELECT {max_id}, NULL, NULL")[0]
        col = self.quote(update_column)
        newest_id, newest = self.fetch_all(f"SELECT {max_id}, (SELECT MAX({col}) FROM {self.quoted})")[0]
        if newest is None:
            return newest_id, None, 0
        count = self.scalar(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {self.quoted} WHERE {col} = {self.placeholder} "
            f"LIMIT {int(count_limit)}) c",
            [newest],
        )
        return newest_id, newest, count

    def id_gaps(self, after: int, upto: int, limit: int, block: int = 100_000) -> list[tuple[int, int]]:
        """The runs of ids missing in ``after < id <= upto`` as ``(lo, hi)``, the highest ``limit``.

        Walks down from ``upto`` in blocks of ``block`` rows: the block's lower end comes from the
        index (one ``OFFSET`` walk), a block whose ids are contiguous costs nothing more, and only a
        block with gaps gets a ``LAG()`` pass on the server. So the cost follows where the gaps
        are and stops once ``limit`` are found (0.3 s per 1,000,000 contiguous ids on MariaDB;
        one 100,000-row ``LAG`` pass takes 0.1 s).
        """
        col, ph = self.quote(ID_COLUMN), self.placeholder
        found: list[tuple[int, int]] = []
        high = upto
        while high > after and len(found) < limit:
            low = self.scalar(
                f"SELECT {col} FROM {self.quoted} WHERE {col} > {ph} AND {col} < {ph} "
                f"ORDER BY {col} DESC LIMIT 1 OFFSET {int(block) - 1}",
                [after, high],
            )
            low = after if low is None else int(low)
            if low == after or high - low != block:  # not a full contiguous block: find its gaps
                sql = (
                    f"SELECT prev + 1, {col} - 1 FROM (SELECT {col}, COALESCE(LAG({col}) OVER (ORDER BY {col}), {ph}) "
                    f"AS prev FROM {self.quoted} WHERE {col} > {ph} AND {col} <= {ph}) g WHERE {col} > prev + 1 "
                    f"ORDER BY {col} DESC"
                )
                found += [(int(lo), int(hi)) for lo, hi in self.fetch_all(sql, [low, low, high])]
            high = low
        return found[:limit]

    def ids_in_ranges(self, ranges: Sequence[Sequence[int]], limit: int) -> list[int]:
        """Ids present in any of the inclusive ``[lo, hi]`` ranges, at most ``limit`` of them."""
        col, ph = self.quote(ID_COLUMN), self.placeholder
        found: list[int] = []
        for start in range(0, len(ranges), 500):
            part = ranges[start : start + 500]
            where = " OR ".join([f"({col} >= {ph} AND {col} <= {ph})"] * len(part))
            params = [int(v) for lo, hi in part for v in (lo, hi)]
            sql = f"SELECT {col} FROM {self.quoted} WHERE {where} LIMIT {int(limit) - len(found)}"
            found += [int(r[0]) for r in self.fetch_all(sql, params)]
            if len(found) >= limit:
                break
        return found

    def nth_after(self, column: str, after: Any | None, before: Any | None, offset: int) -> Any:
        """The value of ``column`` ``offset`` rows past ``after`` (exclusive; None: from the first
        non-NULL value), in ``column`` order and before ``before`` (None: no end).

        Used to cut id ranges, time windows and reconcile chunks into parts of a given row count:
        the server walks the index, nothing is sent but one value. Counted by the server's own
        ordering, so a walk always advances, also when many rows share a value or the collation
        folds case.
        """
        col, ph = self.quote(column), self.placeholder
        where, params = (f"{col} IS NOT NULL", []) if after is None else (f"{col} > {ph}", [after])
        if before is not None:
            where += f" AND {col} < {ph}"
            params.append(before)
        return self.scalar(
            f"SELECT {col} FROM {self.quoted} WHERE {where} ORDER BY {col} LIMIT 1 OFFSET {int(offset)}", params
        )

    def nth_in_window(self, column: str, since: Any, until: Any, offset: int) -> Any:
        """The value of ``column`` ``offset`` rows into ``since <= column < until``, in ``column`` order."""
        col, ph = self.quote(column), self.placeholder
        return self.scalar(
            f"SELECT {col} FROM {self.quoted} WHERE {col} >= {ph} AND {col} < {ph} "
            f"ORDER BY {col} LIMIT 1 OFFSET {int(offset)}",
            [since, until],
        )

    def first_not_null(self, column: str) -> Any:
        col = self.quote(column)
        return self.scalar(f"SELECT {col} FROM {self.quoted} WHERE {col} IS NOT NULL LIMIT 1")

    def stream_partition(
        self, columns: Sequence[str], part: Partition, batch_size: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """``columns`` of a partition's source rows, streamed in batches: ids ``after < id <= upto``,
        or ``since <= column < until`` without this run's insert claim (``exclude_ids``)."""
        ph, id_col = self.placeholder, self.quote(ID_COLUMN)
        if part["kind"] == "ids":
            where, params = f"{id_col} > {ph} AND {id_col} <= {ph}", [part["after"], part["upto"]]
        else:
            column = self.quote(part["column"])
            where = f"{column} >= {ph} AND {column} < {ph}"
            params = [decode_value(part["since"]), decode_value(part["until"])]
            if part.get("exclude_ids"):
                where += f" AND NOT ({id_col} > {ph} AND {id_col} <= {ph})"
                params += part["exclude_ids"]
        return self.stream(self.select_sql(columns, where), params, batch_size)

    def min_max(self, column: str) -> tuple[Any, Any]:
        """The lowest and highest value of ``column``."""
        col = self.quote(column)
        low, high = self.fetch_all(f"SELECT MIN({col}), MAX({col}) FROM {self.quoted}")[0]
        return low, high

    def select_sql(self, columns: Sequence[str], where: str, order_by: str | None = None) -> str:
        cols = ", ".join(self.quote(c) for c in columns)
        order = f" ORDER BY {self.quote(order_by)}" if order_by else ""
        return f"SELECT {cols} FROM {self.quoted} WHERE {where}{order}"

    def checksum(self, key_column: str, columns: Sequence[str], lower: Any, upper: Any) -> tuple[int, int] | None:
        """``(count, sum)`` over ``lower <= key < upper`` (reconcile's formula), or None when this
        database has no hash function."""
        where, params = key_range(self.quote(key_column), self.placeholder, lower, upper)
        sql = self.dialect.checksum_sql(self.quoted, [self.quote(c) for c in columns], where)
        return None if sql is None else self.dialect.fold_checksum(self.fetch_all(sql, params)[0])

    def rows_in_range(self, key_column: str, columns: Sequence[str], lower: Any, upper: Any) -> list[tuple[Any, ...]]:
        """``columns`` of the rows with ``lower <= key < upper`` (None: unbounded, NULL keys never)."""
        where, params = key_range(self.quote(key_column), self.placeholder, lower, upper)
        return self.fetch_all(self.select_sql(columns, where), params)

    def rows_with_keys(self, key_column: str, columns: Sequence[str], keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``(key, *columns)`` of the rows whose ``key_column`` is one of ``keys``: one ``IN`` query."""
        if not keys:
            return []
        sql = self.select_sql([key_column, *columns], f"{self.quote(key_column)} IN ({self.placeholders(len(keys))})")
        return self.fetch_all(sql, keys)

    # ------------------------------------------------------------------ repairs

    def fix_statements(self, fixes: Sequence[Fix]) -> list[bytes]:
        """Each fix as one guarded statement of this table's database (values escaped by its
        driver, for this connection: :mod:`cupid_airflow.core.repair` says what each holds)."""
        dialect, conn = self.dialect, self.conn

        def literals(pairs: Sequence[tuple[str, Any]]) -> list[tuple[str, bytes]]:
            return [(self.quote(name), dialect.literal(conn, value)) for name, value in pairs]

        statements = []
        for fix in fixes:
            guard = literals(fix.guard)
            if fix.kind is RepairKind.INSERT:
                values = literals(fix.values)
                statement = dialect.guarded_insert(
                    self.quoted, [c for c, _ in values], [v for _, v in values], *guard[0]
                )
            elif fix.kind is RepairKind.UPDATE:
                statement = dialect.guarded_update(self.quoted, literals(fix.values), guard)
            else:
                statement = dialect.guarded_delete(self.quoted, guard)
            statements.append(statement)
        return statements

    def fix_script(self, fixes: Sequence[Fix], header: str, statements: Sequence[bytes] | None = None) -> bytes:
        """The fixes as a script for the database's own client: ``header`` (one comment line per
        line of it), the character set of its literals, then one statement per fix (``statements``
        when :meth:`fix_statements` made them already), each after a comment naming its kind and
        event id (the callback's ``eventId``)."""
        lines = [f"-- {line}".encode() for line in header.splitlines()]
        parts = [b"\n".join(lines) + b"\n" if lines else b"", self.dialect.script_preamble]
        made = self.fix_statements(fixes) if statements is None else statements
        for fix, statement in zip(fixes, made, strict=True):
            parts.append(f"-- {fix.kind.value} {fix.event_id}\n".encode() + statement + b";\n")
        return b"".join(parts)

    def writing(self) -> Table:
        """This table, ready to apply repairs: :meth:`apply` commits each batch itself."""
        try:
            self.dialect.prepare_writes(self.conn)
        except Exception as e:
            self._noted(e)
            raise
        return self

    def apply(self, statements: Sequence[bytes]) -> list[bool | Exception]:
        """Guarded statements in one transaction (on a :meth:`writing` table): for each, whether it
        changed its row (False: its guard matched none). When one refuses its row (a constraint, a
        value its column cannot hold), the batch is rolled back and its statements run one a
        transaction, so that row costs only itself: its error stands in its place. Any other error
        (the connection, the grants, a read-only server, a lock wait) is raised, nothing of the
        batch committed."""
        try:
            return self._commit(statements)
        except Exception as e:
            self._unless_row_error(e)
        results: list[bool | Exception] = []
        for statement in statements:
            try:
                results += self._commit([statement])
            except Exception as e:
                self._unless_row_error(e)
                results.append(e)
        return results

    def _unless_row_error(self, error: Exception) -> None:
        """Raise ``error``, noted, unless it is one statement's own (:meth:`Dialect.row_error`)."""
        if not self.dialect.row_error(error):
            self._noted(error)
            raise error

    def _commit(self, statements: Sequence[bytes]) -> list[bool | Exception]:
        conn = self.conn
        try:
            changed: list[bool | Exception] = []
            multi = getattr(self.hook, "multi_statements", False)
            with closing(conn.cursor()) as cursor:
                changed += [count > 0 for count in self.dialect.run_statements(cursor, statements, multi)]
            conn.commit()
            return changed
        except BaseException:
            with suppress(Exception):  # the connection may be gone: the server rolls back then
                conn.rollback()
            raise


def key_range(quoted_key: str, placeholder: str, lower: Any, upper: Any) -> tuple[str, list[Any]]:
    """``lower <= key < upper`` as SQL and parameters; None on either side means unbounded, so the
    first and last chunks also catch destination keys outside the source's range. Rows whose key
    is NULL are never in a range: they cannot be matched with anything."""
    clauses, params = [], []
    if lower is not None:
        clauses.append(f"{quoted_key} >= {placeholder}")
        params.append(lower)
    if upper is not None:
        clauses.append(f"{quoted_key} < {placeholder}")
        params.append(upper)
    return (" AND ".join(clauses) or f"{quoted_key} IS NOT NULL"), params
