"""Compares one partition of source rows with the destination; returns the divergent rows as events."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from airflow.sdk import Context

from cupid_airflow.compare import EVENT_MISSING, PairComparer
from cupid_airflow.hooks.table import ID_COLUMN, Table
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.partitions import from_json

__all__ = ["CompareOperator"]

#: Rows per source fetch and keys per destination ``IN`` lookup.
BATCH_SIZE = 5000


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
        with self.source_table() as source, self.destination_table() as destination:
            for batch in _prefetch(self._source_batches(source, src_columns)):
                keys = list({row[1] for row in batch if row[1] is not None})
                matches = destination.rows_with_keys(des.by_column, tuple(des.columns.values()), keys)
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
