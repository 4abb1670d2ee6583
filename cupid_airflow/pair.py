"""One sync pair: a config's source and one of its destinations, with every fact derived from them
built once (column lists, the comparer, the time-column rules, the callback settings).

The chain is config -> :class:`SyncPair` -> core algorithms -> operators -> DAG factory. The
scan, compare, reconcile and callback operators, the CLI and the watch trigger all start from a
``SyncPair`` instead of re-deriving these facts. Building one does no I/O; tables open on demand.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from cupid_airflow.config import CupidConfig, Destination, Reconcile, Source, load_config, redact_dsn
from cupid_airflow.core.compare import BATCH_SIZE, ID_COLUMN, LOOKUP_THREADS, PairComparer
from cupid_airflow.core.errors import PermanentError
from cupid_airflow.core.events import Event
from cupid_airflow.core.partitions import ColumnTime, Partition, time_kind
from cupid_airflow.core.threads import LookupPool, prefetched
from cupid_airflow.core.watch import Observation
from cupid_airflow.dsn import parse_go_dsn
from cupid_airflow.names import connection_id

if TYPE_CHECKING:
    from cupid_airflow.hooks.table import Table

__all__ = ["ID_COLUMN", "SyncPair", "TableSide"]

#: Database names the watcher qualifies tables with (letters, digits, ``_`` and ``$``): anything
#: else polls on connections of its own, over the DSN's own default database.
SAFE_DATABASE = re.compile(r"[^\W\d][\w$]{0,63}")


@dataclass(frozen=True)
class SyncPair:
    """The source and destination ``index`` of ``config``, known by ``pair_id`` (the scan DAG's
    id, part of every event id: the scan and reconcile DAGs report a divergence under one id)."""

    config: CupidConfig
    index: int
    pair_id: str
    config_file: str | None = field(default=None, compare=False)

    @classmethod
    def load(cls, config_file: str, index: int, pair_id: str) -> SyncPair:
        """The pair from its config file, read once per version of the file: the triggerer starts
        every watcher of a 500-destination file at once, and a task reads its config twice."""
        try:
            stat = os.stat(config_file)
        except OSError:
            return cls(load_config(config_file), index, pair_id, config_file)  # its error names the file
        return cls(_config_at(config_file, stat.st_mtime_ns, stat.st_size), index, pair_id, config_file)

    def mask_secrets(self) -> None:
        """Register the config's secrets with Airflow's log masker."""
        from airflow.sdk.log import mask_secret

        for secret in self.config.secrets():
            mask_secret(secret)

    # ------------------------------------------------------------------ facts

    @property
    def src(self) -> Source:
        return self.config.src

    @property
    def des(self) -> Destination:
        return self.config.des[self.index]

    @cached_property
    def src_columns(self) -> tuple[str, ...]:
        """The mapped source columns, in config order."""
        return tuple(self.des.columns)

    @cached_property
    def des_columns(self) -> tuple[str, ...]:
        """The destination columns they map to, in the same order."""
        return tuple(self.des.columns.values())

    @cached_property
    def src_select(self) -> tuple[str, ...]:
        """What the comparer reads of a source row: ``(id, key, *mapped columns)``."""
        return (ID_COLUMN, self.src.by_column, *self.src_columns)

    @cached_property
    def des_select(self) -> tuple[str, ...]:
        """What it reads of a destination row: ``(key, *mapped columns)``."""
        return (self.des.by_column, *self.des_columns)

    @cached_property
    def comparer(self) -> PairComparer:
        return PairComparer(
            pair_id=self.pair_id,
            table=self.des.table,
            src_by_column=self.src.by_column,
            src_columns=self.src_columns,
            des_columns=self.des_columns,
        )

    @property
    def reconcile(self) -> Reconcile | None:
        """The destination's own ``reconcile`` object, else the top-level one."""
        return self.config.reconcile_for(self.index)

    @property
    def label(self) -> str:
        """``src_table -> des_table``, for logs and alerts (never a DSN)."""
        return f"{self.src.table} -> {self.des.table}"

    # ------------------------------------------------------------------ tables

    def source_table(
        self, read_timeout: int | None = None, over: Table | None = None, name: str | None = None
    ) -> Table:
        """The source table, on a connection of its own, or ``over`` another table's connection to
        the same server (the watch trigger's lanes), named ``name`` there (default: src.table)."""
        if over is not None:
            return over.sibling(name or self.src.table, self._side("src"))
        from cupid_airflow.hooks.table import Table, db_hook

        hook = db_hook(self.src, connection_id(self.pair_id, "src"), read_timeout)
        return Table(hook, self.src.table, self._side("src"))

    def destination_table(self) -> Table:
        from cupid_airflow.hooks.table import Table, db_hook

        hook = db_hook(self.des, connection_id(self.pair_id, "des"))
        return Table(hook, self.des.table, self._side(f"des[{self.index}]"))

    def repair_table(self) -> Table:
        """The destination table over ``repair.connId``, the connection that writes."""
        from cupid_airflow.hooks.table import CupidMySqlHook, Table, connection_hook

        settings = self.des.repair
        assert settings is not None and settings.conn_id is not None
        side = self._side(f"des[{self.index}].repair (connection {settings.conn_id})")
        hook = connection_hook(settings.conn_id)
        if isinstance(hook, CupidMySqlHook):
            hook.multi_statements = True  # its statements are cupid's own (hooks/table.py)
        return Table(hook, self.des.table, side)

    def _side(self, path: str) -> str:
        return f"{self.config_file}: {path}" if self.config_file else path

    def source_side(self, table: Table) -> TableSide:
        """The source as the reconcile walk sees it; the key is hashed with the columns so values
        moved between keys change the checksum."""
        return TableSide(table, self.src.by_column, self.src_select, (self.src.by_column, *self.src_columns))

    def destination_side(self, table: Table) -> TableSide:
        return TableSide(table, self.des.by_column, self.des_select, self.des_select)

    # ------------------------------------------------------------------ time column

    def column_time(self, table: Table) -> ColumnTime | None:
        """How ``src.updateColumn`` stores time (read from one value), or None when the column is
        unset or empty. A type or format cupid cannot range-scan is a :class:`TimeColumnError`."""
        column = self.src.update_column
        if column is None:
            return None
        sample = table.first_not_null(column)
        if sample is None:
            return None
        try:
            return ColumnTime(time_kind(sample), self.src.timezone, self.src.time_format)
        except PermanentError as e:
            raise type(e)(f"src.updateColumn {column!r}: {e}") from None

    # ------------------------------------------------------------------ watching

    def watch_key(self) -> tuple[str, ...]:
        """What identifies the source table and how it is polled: pairs with equal keys (every
        destination of one source, in one file or several) share one poll. The DSN enters without
        its password, so the key is safe to print (Airflow logs it)."""
        src = self.src
        endpoint = f"conn:{src.conn_id}" if src.dsn is None else "dsn:" + redact_dsn(src.dsn)
        update = src.update_column if src.update and src.update_column else ""
        return (
            endpoint,
            src.table,
            str(src.insert_interval_millisecond) if src.insert else "",
            update,
            str(src.update_interval_millisecond) if update else "",
        )

    def watch_server(self) -> tuple[Hashable, str]:
        """Which connections can poll this source, and the table's name over them: a DSN's
        server, login and client options (its database left out, the table qualified with it
        instead, so tables in many databases of one server share its connections), or the
        Airflow connection. The password enters as a digest: a rotated one gets new connections.
        Kept in the triggerer's memory only."""
        src = self.src
        if src.dsn is None:
            return ("conn", src.conn_id), src.table
        dsn = parse_go_dsn(src.dsn)
        secret = hashlib.sha256((dsn.password or "").encode()).hexdigest()
        options = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in dsn.client_options().items()))
        server: tuple[Any, ...] = ("dsn", dsn.host, dsn.port, dsn.unix_socket, dsn.user, secret, options)
        if "." in src.table:
            return server, src.table
        if not SAFE_DATABASE.fullmatch(dsn.database):  # a name the quoting cannot carry: a lane of its own
            return (*server, dsn.database), src.table
        return server, f"{dsn.database}.{src.table}"

    def watch_version(self) -> str:
        """A digest of :meth:`watch_key`, for the watch trigger's arguments: a config edit that
        changes the source or how it is polled changes the trigger, so Airflow replaces it."""
        return hashlib.sha256("\x1f".join(self.watch_key()).encode()).hexdigest()[:16]

    def observe(self, table: Table, ids: bool, updates: bool) -> Observation:
        """One poll of the source: the parts asked for (and enabled) of what the trigger watches."""
        ids = ids and self.src.insert
        column = self.src.update_column if updates and self.src.update else None
        return Observation.from_row(ids, column is not None, *table.newest(ids, column))

    # ------------------------------------------------------------------ compare

    def partition_batches(
        self, source: Table, part: Partition, stamped: bool = False
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The partition's source rows ``(id, key, *columns)``, streamed in batches; ``stamped``
        adds the update column's value last (the comparer ignores it; confirmation dates by it)."""
        columns = (*self.src_select, self.src.update_column) if stamped and self.src.update_column else self.src_select
        return source.stream_partition(columns, part, BATCH_SIZE)

    def lookup(self, table: Table, batch: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The destination rows ``(key, *columns)`` whose keys a batch of source rows has."""
        keys = list(dict.fromkeys(row[1] for row in batch if row[1] is not None))
        return table.rows_with_keys(self.des.by_column, self.des_columns, keys)

    def compare_partition(
        self,
        part: Partition,
        emit: Callable[[list[Any]], None],
        seen: Callable[[Sequence[tuple[Any, ...]], list[Event]], list[Any]] | None = None,
    ) -> int:
        """Stream the partition's source rows, look their keys up in the destination in batches,
        compare, and ``emit`` each batch's events as it is done (nothing holds them all); returns
        the rows compared. With ``seen``, rows are read with their update column's value and each
        batch goes through ``seen(rows, events)`` first, which returns the events to emit
        (confirmation: :mod:`cupid_airflow.confirming`). Source reads, destination lookups (on
        :data:`LOOKUP_THREADS` connections) and the comparison overlap; every thread stops before
        its connection closes."""
        rows = 0
        with ExitStack() as stack:
            source = stack.enter_context(self.source_table())
            pool = stack.enter_context(LookupPool(self.destination_table, LOOKUP_THREADS, _close))
            batches = self.partition_batches(source, part, stamped=seen is not None)
            if source.thread_safe:
                batches = stack.enter_context(prefetched(batches))  # exits first: before the source closes
            for batch, matches in pool.map(self.lookup, batches):
                events = self.comparer.compare(batch, matches)
                emit(events if seen is None else seen(batch, events))
                rows += len(batch)
        return rows

    @property
    def version_mapped(self) -> bool:
        """Whether the destination keeps the source's update column: then a row compared equal
        proves its version arrived (an update of unmapped columns alone would compare equal
        before it did)."""
        return self.src.update_column is not None and self.src.update_column in self.des.columns

    # ------------------------------------------------------------------ reconcile re-check

    def recheck_rows(
        self, source: Table, target: Table, by_values: Sequence[Any], stamp: bool, ids: Sequence[int] | None = None
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[Any]]:
        """Both sides' rows for these keys, for a re-check: source rows as ``(id, key, *columns)``,
        destination rows as ``(key, *columns)``, and the source rows' update times when ``stamp``.
        With ``ids``, the source rows are those ids' (confirmation follows a row, whatever its key
        now is), not the keys'."""
        extra = [self.src.update_column] if stamp and self.src.update_column else []
        src_rows: list[tuple[Any, ...]] = []
        des_rows: list[tuple[Any, ...]] = []
        for start in range(0, len(by_values), BATCH_SIZE):
            batch = by_values[start : start + BATCH_SIZE]
            if ids is None:  # (key, id, *columns[, stamp])
                src_rows += source.rows_with_keys(self.src.by_column, [ID_COLUMN, *self.src_columns, *extra], batch)
            des_rows += target.rows_with_keys(self.des.by_column, self.des_columns, batch)
        for start in range(0, len(ids or ()), BATCH_SIZE):  # (id, key, ...): into the same shape
            batch = list((ids or ())[start : start + BATCH_SIZE])
            rows = source.rows_with_keys(ID_COLUMN, [self.src.by_column, *self.src_columns, *extra], batch)
            src_rows += [(r[1], r[0], *r[2:]) for r in rows]
        stamps = [r[-1] for r in src_rows] if extra else []
        # the comparer wants (id, key, *columns)
        width = 2 + len(self.src_columns)
        ordered = [(r[1], r[0], *r[2:width]) for r in src_rows]
        return ordered, des_rows, stamps


@lru_cache(maxsize=64)
def _config_at(path: str, mtime_ns: int, size: int) -> CupidConfig:
    return load_config(path)


def _close(table: Table) -> None:
    table.close()


@dataclass(frozen=True)
class TableSide:
    """A table bound to a match key and the columns the reconcile walk reads and hashes
    (:class:`cupid_airflow.core.reconcile.KeyRangeSide`)."""

    table: Table
    key: str
    read: tuple[str, ...]
    hashed: tuple[str, ...]

    @property
    def thread_safe(self) -> bool:
        return self.table.thread_safe

    def nth_key(self, after: Any, before: Any, offset: int) -> Any:
        return self.table.nth_after(self.key, after, before, offset)

    def checksum(self, lower: Any, upper: Any) -> tuple[int, int] | None:
        return self.table.checksum(self.key, self.hashed, lower, upper)

    def rows(self, lower: Any, upper: Any) -> list[tuple[Any, ...]]:
        return self.table.rows_in_range(self.key, self.read, lower, upper)
