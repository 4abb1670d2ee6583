"""Compares one partition of source rows with the destination; returns the divergent rows as events."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from airflow.sdk import Context

from cupid_airflow.compare import EVENT_MISSING, PairComparer
from cupid_airflow.hooks.table import ID_COLUMN, Table
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.partitions import from_json

__all__ = ["CompareOperator"]

#: Rows per source fetch and keys per destination ``IN`` lookup.
BATCH_SIZE = 5000
#: Destination lookups in flight at once, each on its own connection: while the server resolves
#: one batch's keys, the client converts another's rows and compares a third.
LOOKUP_THREADS = 3


class CompareOperator(CupidOperator):
    """Streams a partition's source rows, looks their keys up in the destination in batches, and
    returns one event per source row that is missing there (type 1) or different (type 2).

    Source reads run in a second thread on their own connection, so the source query, the
    destination lookups and the comparison overlap.

    :param partition: one partition from a scan task (mapped).
    """

    ui_color = "#f2ecd9"

    def __init__(self, *, partition: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition = partition

    def execute(self, context: Context) -> list[dict[str, Any]]:
        src, des = self.config.src, self.des
        src_columns = tuple(des.columns)
        comparer = PairComparer(
            pair_id=self.dag_id,
            table=des.table,
            src_by_column=src.by_column,
            src_columns=src_columns,
            des_columns=tuple(des.columns.values()),
        )
        events: list[dict[str, Any]] = []
        rows = 0
        lookup_columns = tuple(des.columns.values())
        with self.source_table() as source, _LookupPool(self.destination_table, LOOKUP_THREADS) as lookups:
            batches = self._source_batches(source, src_columns)
            if source.thread_safe:
                batches = _prefetch(batches)
            for batch, matches in lookups.map(batches, des.by_column, lookup_columns):
                events.extend(comparer.compare(batch, matches))
                rows += len(batch)
        missing = sum(1 for e in events if e["type"] == EVENT_MISSING)
        self.log.info(
            "Compared %d source rows of %s: %d missing (type 1), %d different (type 2)",
            rows, self.partition, missing, len(events) - missing,
        )  # fmt: skip
        return events

    def _source_batches(self, source: Table, columns: tuple[str, ...]) -> Iterator[list[tuple[Any, ...]]]:
        part, ph = self.partition, source.placeholder
        select = [ID_COLUMN, self.config.src.by_column, *columns]
        if part["kind"] == "ids":
            sql = source.select_sql(select, f"{source.quote(ID_COLUMN)} > {ph} AND {source.quote(ID_COLUMN)} <= {ph}")
            params = [part["after"], part["upto"]]
        else:
            column = source.quote(part["column"])
            where = f"{column} >= {ph} AND {column} < {ph}"
            params = [from_json(part["vtype"], part["since"]), from_json(part["vtype"], part["until"])]
            if part.get("exclude_ids"):
                where += f" AND NOT ({source.quote(ID_COLUMN)} > {ph} AND {source.quote(ID_COLUMN)} <= {ph})"
                params += part["exclude_ids"]
            sql = source.select_sql(select, where)
        return source.stream(sql, params, BATCH_SIZE)


_DONE = object()


def _prefetch(batches: Iterator[list[tuple[Any, ...]]], depth: int = 2) -> Iterator[list[tuple[Any, ...]]]:
    """Iterate ``batches`` in a background thread, ``depth`` batches ahead of the consumer."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    thread = threading.Thread(target=produce, name="cupid-source-reader", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


class _LookupPool:
    """Destination key lookups on a few threads, each with its own connection, results in order."""

    def __init__(self, make_table: Callable[[], Table], threads: int) -> None:
        self._make_table = make_table
        self._local = threading.local()
        self._tables: list[Table] = []
        self._lock = threading.Lock()
        # A connection that must stay on its thread (SQLite) gets no pool: lookups run inline.
        self._threads = threads if self._table().thread_safe else 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, self._threads), thread_name_prefix="cupid-lookup")

    def __enter__(self) -> _LookupPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for table in self._tables:
            table.close()

    def _table(self) -> Table:
        table: Table | None = getattr(self._local, "table", None)
        if table is None:
            table = self._local.table = self._make_table()
            with self._lock:
                self._tables.append(table)
        return table

    def _lookup(self, batch: list[tuple[Any, ...]], key: str, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
        keys = list(dict.fromkeys(row[1] for row in batch if row[1] is not None))
        return self._table().rows_with_keys(key, columns, keys)

    def map(
        self, batches: Iterator[list[tuple[Any, ...]]], key: str, columns: tuple[str, ...]
    ) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
        pending: deque[tuple[list[tuple[Any, ...]], Future[list[tuple[Any, ...]]]]] = deque()
        for batch in batches:
            if not self._threads:
                yield batch, self._lookup(batch, key, columns)
                continue
            pending.append((batch, self._pool.submit(self._lookup, batch, key, columns)))
            if len(pending) > self._threads:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
