"""Full reconciliation of a pair: plan segments of the key space, then compare each segment chunk
by chunk (checksums first, rows only where they differ)."""

from __future__ import annotations

import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import Context

from cupid_airflow.compare import EVENT_GONE, PairComparer
from cupid_airflow.config import Reconcile
from cupid_airflow.hooks.table import ID_COLUMN, Table
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.operators.compare import BATCH_SIZE
from cupid_airflow.partitions import MAX_PARTITIONS
from cupid_airflow.reconcile import ChunkSizer, MismatchTracker, checksum_sql, fold_checksum, key_range

__all__ = ["ReconcileOperator", "ReconcilePlanOperator"]

#: task_state_store key: where an interrupted segment stopped, and what it had found.
PROGRESS_KEY = "reconcile_progress"
SAVE_EVERY_SECONDS = 2.0


def _key_json(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


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
                nxt = source.nth_from(key, bounds[-1], settings.to_key, settings.segment_rows)
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
        settings, src, des = self.settings, self.config.src, self.des
        store = context.get("task_state_store")
        saved: Any = store.get(PROGRESS_KEY, None) if store is not None else None
        position = self.segment["lower"]
        events: list[dict[str, Any]] = []
        stats = {"chunks": 0, "checksummed": 0, "read": 0, "rows": 0}
        if isinstance(saved, dict) and saved.get("segment") == self.segment:
            position, events, stats = saved["position"], saved["events"], saved["stats"]
            self.log.info("Resuming after an earlier try: from %s = %r, %d events so far", src.by_column, position,
                          len(events))  # fmt: skip
        comparer = PairComparer(
            pair_id=self.pair_id,
            table=des.table,
            src_by_column=src.by_column,
            src_columns=tuple(des.columns),
            des_columns=tuple(des.columns.values()),
        )
        sizer, tracker = ChunkSizer(float(settings.target_query_seconds)), MismatchTracker()
        last_save = time.monotonic()
        upper = self.segment["upper"]
        with self.source_table() as source, self.destination_table() as target, ThreadPoolExecutor(1) as pool:
            while True:
                nxt = source.nth_from(src.by_column, position, upper, sizer.rows)
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
                tracker.record(mismatch)
                stats["chunks"] += 1
                stats["rows"] += rows
                position = chunk_upper
                if nxt is None:
                    break
                if store is not None and time.monotonic() - last_save >= SAVE_EVERY_SECONDS:
                    progress: Any = {"segment": self.segment, "position": _key_json(position), "events": events,
                                     "stats": stats}  # fmt: skip
                    store.set(PROGRESS_KEY, progress)
                    last_save = time.monotonic()
            if settings.min_age_seconds and events:
                events = self._old_enough(source, target, comparer, events, settings.min_age_seconds)
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
        if store is not None:
            store.delete(PROGRESS_KEY)
        return result

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

        if source.thread_safe and target.thread_safe:
            remote = pool.submit(checksum, target, des.by_column, list(des.columns.values()))
            mine = checksum(source, src.by_column, list(des.columns))
            theirs = remote.result()
        else:
            mine = checksum(source, src.by_column, list(des.columns))
            theirs = checksum(target, des.by_column, list(des.columns.values()))
        rows = mine[0] if mine else 0
        return (mine is not None and mine == theirs), rows

    def _compare_rows(
        self, source: Table, target: Table, pool: ThreadPoolExecutor, comparer: PairComparer, lower: Any, upper: Any
    ) -> tuple[list[dict[str, Any]], int]:
        src, des = self.config.src, self.des

        def rows(table: Table, key: str, columns: list[str]) -> list[tuple[Any, ...]]:
            where, params = key_range(table.quote(key), table.placeholder, lower, upper)
            return table.fetch_all(table.select_sql(columns, where), params)

        des_columns = [des.by_column, *des.columns.values()]
        both = source.thread_safe and target.thread_safe
        theirs = pool.submit(rows, target, des.by_column, des_columns) if both else None
        src_rows = rows(source, src.by_column, [ID_COLUMN, src.by_column, *des.columns])
        des_rows = theirs.result() if theirs is not None else rows(target, des.by_column, des_columns)
        return comparer.diff(src_rows, des_rows), len(src_rows)

    def _old_enough(
        self, source: Table, target: Table, comparer: PairComparer, events: list[dict[str, Any]], min_age: int
    ) -> list[dict[str, Any]]:
        """Drop what replication lag explains: divergences whose source row changed in the last
        ``min_age`` seconds, and those that are gone when looked at again."""
        src, des = self.config.src, self.des
        keys = [e["byValue"] for e in events]
        stamp = [src.update_column] if src.update_column else []
        src_rows: list[tuple[Any, ...]] = []
        des_rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), BATCH_SIZE):
            batch = keys[start : start + BATCH_SIZE]
            src_rows += source.rows_with_keys(src.by_column, [ID_COLUMN, *des.columns, *stamp], batch)
            des_rows += target.rows_with_keys(des.by_column, list(des.columns.values()), batch)
        recent: set[str] = set()
        if stamp:
            cutoff = datetime.now(ZoneInfo(src.timezone)).replace(tzinfo=None) - timedelta(seconds=min_age)
            recent = {str(r[0]) for r in src_rows if isinstance(r[-1], datetime) and r[-1] >= cutoff}
            src_rows = [r[:-1] for r in src_rows]
        # rows_with_keys gives (key, id, *columns); the comparer wants (id, key, *columns)
        still = comparer.diff([(r[1], r[0], *r[2:]) for r in src_rows], des_rows)
        kept = [e for e in still if e["type"] == EVENT_GONE or str(e["byValue"]) not in recent]
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
