"""Full reconciliation of a pair: plan segments of the key space, then compare each segment chunk
by chunk (checksums first, rows only where they differ)."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import Context

from cupid_airflow.compare import EVENT_GONE, PairComparer
from cupid_airflow.config import Reconcile
from cupid_airflow.hooks.table import ID_COLUMN, Table
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.operators.compare import BATCH_SIZE
from cupid_airflow.partitions import MAX_PARTITIONS, ColumnTime, time_kind
from cupid_airflow.reconcile import ChunkSizer, MismatchTracker, checksum_sql, fold_checksum, key_range

__all__ = ["ReconcileOperator", "ReconcilePlanOperator"]

#: task_state_store key: where an interrupted segment stopped, and what it had found.
PROGRESS_KEY = "reconcile_progress"
SAVE_EVERY_SECONDS = 2.0
#: Progress bigger than this (a segment where most rows differ) is no longer saved: the last saved
#: position stays valid and a retry redoes more work, instead of every save failing or crawling.
MAX_PROGRESS_BYTES = 8 * 1024 * 1024
_T = TypeVar("_T")


def _key_json(value: Any) -> Any:
    """A key as JSON for XCom and the state store; :func:`_key_sql` turns it back into a parameter.

    Numbers and strings stay as they are; DECIMAL, DATETIME and DATE keys become text the
    databases compare with their columns; binary keys (``BINARY(16)`` UUIDs) a tagged hex string.
    """
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return {"hex": bytes(value).hex()}
    return value


def _key_sql(value: Any) -> Any:
    return bytes.fromhex(value["hex"]) if isinstance(value, dict) else value


def _lookup_keys(by_value: str) -> list[Any]:
    """An event's ``byValue`` as key parameters: binary keys that are not UTF-8 are written
    ``0x<hex>`` in events, so those are looked up as the bytes too."""
    if re.fullmatch(r"0x(?:[0-9a-f]{2})+", by_value):
        return [by_value, bytes.fromhex(by_value[2:])]
    return [by_value]


def _both_sides(
    pool: ThreadPoolExecutor, source: Table, target: Table, mine: Callable[[], _T], theirs: Callable[[], _T]
) -> tuple[_T, _T]:
    """The source's and the destination's query of one chunk, at the same time when both
    connections may be used from another thread (not SQLite's)."""
    if source.thread_safe and target.thread_safe:
        remote = pool.submit(theirs)
        return mine(), remote.result()
    return mine(), theirs()


class _ReconcileBase(CupidOperator):
    @property
    def settings(self) -> Reconcile:
        settings = self.config.reconcile_for(self.destination)
        if settings is None:
            raise ValueError(f"{self.config_file}: des[{self.destination}] has no reconcile settings")
        return settings

    @property
    def pair_id(self) -> str:
        """The scan DAG's id: a divergence found by either DAG has the same event id."""
        return self.dag_id.removesuffix("_reconcile")


class ReconcilePlanOperator(_ReconcileBase):
    """Cuts the key range into segments of about ``segmentRows`` source rows, through the index.

    Each segment becomes one mapped ``reconcile`` task; the first and last are open-ended so
    destination rows outside the source's key range are seen too.
    """

    ui_color = "#e6f2ff"

    def execute(self, context: Context) -> list[dict[str, Any]]:
        settings, key = self.settings, self.config.src.by_column
        bounds: list[Any] = [settings.from_key]
        with self.source_table() as source:
            while True:
                nxt = source.nth_after(key, bounds[-1], settings.to_key, settings.segment_rows)
                if nxt is None or len(bounds) >= MAX_PARTITIONS:
                    break
                bounds.append(nxt)
        bounds.append(settings.to_key)
        segments = [{"lower": _key_json(lo), "upper": _key_json(hi)} for lo, hi in itertools.pairwise(bounds)]
        self.log.info("Reconciling %s on %s in %d segment(s): %s", self.config.src.table, key, len(segments), segments)
        return segments


class ReconcileOperator(_ReconcileBase):
    """Compares one segment of the pair chunk by chunk and returns its events (types 1, 2 and 3),
    or, with ``reportOnly``, writes them to a JSON Lines report and returns a summary.

    Progress is saved in the task instance's state store as it goes, so a retry (or a try after the
    worker was killed) continues from the last finished chunk with what was found before it.
    """

    ui_color = "#e6f7ff"

    def __init__(self, *, segment: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.segment = segment

    def execute(self, context: Context) -> Any:
        settings, src = self.settings, self.config.src
        store = context.get("task_state_store")
        saved: Any = store.get(PROGRESS_KEY, None) if store is not None else None
        position = self.segment["lower"]
        events: list[dict[str, Any]] = []
        stats = {"chunks": 0, "checksummed": 0, "read": 0, "rows": 0}
        found_at = 0.0  # wall clock of the last chunk that held differences
        mine = isinstance(saved, dict) and saved.get("segment") == self.segment  # plan may re-cut on a clear
        if mine:
            position, events, stats = saved["position"], saved["events"], saved["stats"]
            found_at = saved.get("found_at", time.time())
            self.log.info("Resuming after an earlier try: from %s = %r, %d events so far", src.by_column, position,
                          len(events))  # fmt: skip
        if not (mine and saved.get("done")):
            position, found_at = self._walk(store, position, events, stats, found_at)
        if settings.min_age_seconds and events:
            moment = datetime.fromtimestamp(found_at + settings.min_age_seconds, UTC)
            if moment > datetime.now(UTC) and self._needs_waiting(events):
                # Deletes (type 3) and rows without a usable update time can only be told from
                # replication lag by looking again later: wait in the triggerer, not in a worker slot.
                self.log.info("minAgeSeconds: %d differences re-checked at %s", len(events), moment.isoformat())
                if self._save(store, {"segment": self.segment, "position": _key_json(position), "events": events,
                                      "stats": stats, "found_at": found_at, "done": True}):  # fmt: skip
                    self.defer(trigger=DateTimeTrigger(moment=moment), method_name="recheck")
                time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))  # not saved: wait here
        return self._finish(context, events, stats)

    def recheck(self, context: Context, event: Any = None) -> Any:
        """Back from the minAgeSeconds wait: re-check what the pass found, then finish."""
        store = context.get("task_state_store")
        saved: Any = store.get(PROGRESS_KEY, None) if store is not None else None
        if not (isinstance(saved, dict) and saved.get("segment") == self.segment and saved.get("done")):
            raise RuntimeError(f"segment {self.segment}: the saved pass to re-check is gone; clear the task to redo it")
        return self._finish(context, saved["events"], saved["stats"])

    def _walk(
        self, store: Any, position: Any, events: list[dict[str, Any]], stats: dict[str, int], found_at: float
    ) -> tuple[Any, float]:
        """Chunk by chunk from ``position`` to the segment's end; ``events`` and ``stats`` grow in place."""
        settings, src, comparer = self.settings, self.config.src, self._comparer
        sizer, tracker = ChunkSizer(float(settings.target_query_seconds)), MismatchTracker()
        last_save = time.monotonic()
        upper = _key_sql(self.segment["upper"])
        position = _key_sql(position)
        with self.source_table() as source, self.destination_table() as target, ThreadPoolExecutor(1) as pool:
            while True:
                nxt = source.nth_after(src.by_column, position, upper, sizer.rows)
                chunk_upper = upper if nxt is None else nxt
                started = time.monotonic()
                mismatch = True
                checked = tracker.use_checksum()
                if checked:
                    same, rows = self._same_checksums(source, target, pool, position, chunk_upper)
                    stats["checksummed"] += 1
                    sizer.observe(rows, time.monotonic() - started)
                    mismatch = not same
                if mismatch:
                    found, rows = self._compare_rows(source, target, pool, comparer, position, chunk_upper)
                    events.extend(found)
                    stats["read"] += 1
                    if not checked:  # the read is this chunk's query: steer the size by it
                        sizer.observe(rows, time.monotonic() - started)
                    mismatch = bool(found)
                    found_at = time.time() if found else found_at
                tracker.record(mismatch)
                stats["chunks"] += 1
                stats["rows"] += rows
                position = chunk_upper
                if nxt is None:
                    return position, found_at
                if store is not None and time.monotonic() - last_save >= SAVE_EVERY_SECONDS:
                    self._save(store, {"segment": self.segment, "position": _key_json(position), "events": events,
                                       "stats": stats, "found_at": found_at})  # fmt: skip
                    last_save = time.monotonic()

    def _save(self, store: Any, progress: dict[str, Any]) -> bool:
        """Saves ``progress`` unless there is no store or it is too big; whether it was saved."""
        if store is None or getattr(self, "_progress_too_big", False):
            return False
        if len(json.dumps(progress, default=str)) > MAX_PROGRESS_BYTES:
            self._progress_too_big = True
            self.log.warning("Progress passed %d bytes and is no longer saved: a retry resumes from the last save",
                             MAX_PROGRESS_BYTES)  # fmt: skip
            return False
        store.set(PROGRESS_KEY, progress)
        return True

    def _finish(self, context: Context, events: list[dict[str, Any]], stats: dict[str, int]) -> Any:
        settings = self.settings
        if settings.min_age_seconds and events:
            with self.source_table() as source, self.destination_table() as target:
                events = self._old_enough(source, target, self._comparer, events, settings.min_age_seconds)
        counts = {str(t): sum(1 for e in events if e["type"] == t) for t in (1, 2, 3)}
        self.log.info(
            "Segment %s: %d source rows in %d chunks (%d checksummed, %d read): %s missing (type 1), "
            "%s different (type 2), %s gone from the source (type 3)",
            self.segment, stats["rows"], stats["chunks"], stats["checksummed"], stats["read"],
            counts["1"], counts["2"], counts["3"],
        )  # fmt: skip
        result: Any = events
        if settings.report_only:
            path = self._write_report(context, settings, events)
            result = {"report": str(path), "events": counts, **stats}
        store = context.get("task_state_store")
        if store is not None:
            store.delete(PROGRESS_KEY)
        return result

    @property
    def _comparer(self) -> PairComparer:
        src, des = self.config.src, self.des
        return PairComparer(
            pair_id=self.pair_id,
            table=des.table,
            src_by_column=src.by_column,
            src_columns=tuple(des.columns),
            des_columns=tuple(des.columns.values()),
        )

    # ------------------------------------------------------------------ one chunk

    def _same_checksums(
        self, source: Table, target: Table, pool: ThreadPoolExecutor, lower: Any, upper: Any
    ) -> tuple[bool, int]:
        """Both sides' checksums of ``[lower, upper)``, computed concurrently; (equal, source rows)."""
        src, des = self.config.src, self.des

        def checksum(table: Table, key: str, columns: list[str]) -> tuple[int, int] | None:
            where, params = key_range(table.quote(key), table.placeholder, lower, upper)
            sql = checksum_sql(table.kind, table.quoted, [table.quote(c) for c in columns], where)
            return None if sql is None else fold_checksum(table.fetch_all(sql, params)[0])

        # The key is hashed too: the same values under other keys (a swap, a delete plus an insert
        # of an equal row) must not sum to the same checksum.
        src_columns, des_columns = [src.by_column, *des.columns], [des.by_column, *des.columns.values()]
        mine, theirs = _both_sides(
            pool, source, target,
            lambda: checksum(source, src.by_column, src_columns), lambda: checksum(target, des.by_column, des_columns),
        )  # fmt: skip
        rows = mine[0] if mine else 0
        return (mine is not None and mine == theirs), rows

    def _compare_rows(
        self, source: Table, target: Table, pool: ThreadPoolExecutor, comparer: PairComparer, lower: Any, upper: Any
    ) -> tuple[list[dict[str, Any]], int]:
        src, des = self.config.src, self.des

        def rows(table: Table, key: str, columns: list[str]) -> list[tuple[Any, ...]]:
            where, params = key_range(table.quote(key), table.placeholder, lower, upper)
            return table.fetch_all(table.select_sql(columns, where), params)

        src_columns, des_columns = [ID_COLUMN, src.by_column, *des.columns], [des.by_column, *des.columns.values()]
        src_rows, des_rows = _both_sides(
            pool, source, target,
            lambda: rows(source, src.by_column, src_columns), lambda: rows(target, des.by_column, des_columns),
        )  # fmt: skip
        return comparer.diff(src_rows, des_rows), len(src_rows)

    def _needs_waiting(self, events: list[dict[str, Any]]) -> bool:
        """True when some difference cannot be dated by the source row's update time: a delete
        (type 3: no source row), or any row when ``src.updateColumn`` is unset or unreadable."""
        if any(e["type"] == EVENT_GONE for e in events):
            return True
        with self.source_table() as source:
            return self._row_time(source) is None

    def _row_time(self, source: Table) -> ColumnTime | None:
        """How ``src.updateColumn`` stores time, when it can be compared with a cut-off."""
        src = self.config.src
        if not src.update_column:
            return None
        sample = source.first_not_null(src.update_column)
        try:
            return None if sample is None else ColumnTime(time_kind(sample), src.timezone, src.time_format)
        except (TypeError, ValueError) as error:  # e.g. text in a format that does not sort
            self.log.warning("minAgeSeconds cannot read %s (%s): waiting instead", src.update_column, error)
            return None

    def _old_enough(
        self, source: Table, target: Table, comparer: PairComparer, events: list[dict[str, Any]], min_age: int
    ) -> list[dict[str, Any]]:
        """Drop what replication lag explains: divergences that are gone when looked at again, and
        those whose source row changed in the last ``min_age`` seconds."""
        src, des = self.config.src, self.des
        keys = [k for e in events for k in _lookup_keys(e["byValue"])]
        writer = self._row_time(source)
        stamp = [src.update_column] if writer is not None and src.update_column else []
        src_rows: list[tuple[Any, ...]] = []
        des_rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), BATCH_SIZE):
            batch = keys[start : start + BATCH_SIZE]
            src_rows += source.rows_with_keys(src.by_column, [ID_COLUMN, *des.columns, *stamp], batch)
            des_rows += target.rows_with_keys(des.by_column, list(des.columns.values()), batch)
        recent: set[str] = set()
        if writer is not None and stamp:
            cutoff = writer.lower(datetime.now(UTC) - timedelta(seconds=min_age))
            recent = {str(r[0]) for r in src_rows if r[-1] is not None and r[-1] >= cutoff}
            src_rows = [r[:-1] for r in src_rows]
        # rows_with_keys gives (key, id, *columns); the comparer wants (id, key, *columns)
        still = comparer.diff([(r[1], r[0], *r[2:]) for r in src_rows], des_rows)
        # Only what was there before the wait and is still there, as the same kind of difference:
        # a row deleted at the source during the wait has not had its minAgeSeconds yet.
        before = {(e["byValue"], e["type"]) for e in events}
        kept = [
            e for e in still
            if (e["byValue"], e["type"]) in before and (e["type"] == EVENT_GONE or str(e["byValue"]) not in recent)
        ]  # fmt: skip
        self.log.info("minAgeSeconds %d: %d of %d events re-checked and kept", min_age, len(kept), len(events))
        return kept

    def _write_report(self, context: Context, settings: Reconcile, events: list[dict[str, Any]]) -> Path:
        base = Path(settings.report_dir or Path(os.environ.get("AIRFLOW_HOME", ".")) / "cupid-reports")
        run_id = str(context["run_id"]).replace(":", "_").replace("+", "_")
        folder = base / self.dag_id / run_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"segment-{context['ti'].map_index:04d}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for event in events:
                out.write(json.dumps(event, ensure_ascii=False) + "\n")
        tmp.replace(path)
        self.log.info("Wrote %d events to %s", len(events), path)
        return path
