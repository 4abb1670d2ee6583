"""Full reconciliation of a pair: plan segments of the key space, then walk each segment
(:class:`cupid_airflow.core.reconcile.SegmentWalk`). These operators keep the Airflow part:
saved progress in the task state store, the minAgeSeconds deferral, the report file."""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from cupid_airflow.config import Reconcile
from cupid_airflow.core.codec import StateError, Store, encode_value
from cupid_airflow.core.compare import lookup_keys
from cupid_airflow.core.confirm import Confirmer, read_confirm_state
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.errors import TimeColumnError
from cupid_airflow.core.events import Event
from cupid_airflow.core.labels import segment_label
from cupid_airflow.core.partitions import MAX_PARTITIONS
from cupid_airflow.core.reconcile import SegmentWalk, needs_waiting, settled
from cupid_airflow.core.reconcile_progress import (
    ReconcileProgress,
    Segment,
    clear_progress,
    new_progress,
    progress_size,
    read_progress,
    write_progress,
)
from cupid_airflow.exceptions import CupidFailure
from cupid_airflow.names import confirm_state_key, pair_of, path_part
from cupid_airflow.operators.base import CupidOperator

__all__ = ["ReconcileOperator", "ReconcilePlanOperator"]

#: Progress bigger than this (a segment where most rows differ) is no longer saved: the last saved
#: position stays valid and a retry redoes more work, instead of every save failing or crawling.
MAX_PROGRESS_BYTES = 8 * 1024 * 1024


class _ReconcileBase(CupidOperator):
    def default_pair_id(self) -> str:
        """The scan DAG's id: a divergence found by either DAG has the same event id."""
        return pair_of(self.dag_id)

    @property
    def settings(self) -> Reconcile:
        settings = self.pair.reconcile
        if settings is None:
            raise CupidFailure(f"{self.config_file}: des[{self.destination}] has no reconcile settings")
        return settings


class ReconcilePlanOperator(_ReconcileBase):
    """Cuts the key range into segments of about ``segmentRows`` source rows, through the index.

    Each segment becomes one mapped ``reconcile`` task; the first and last are open-ended so
    destination rows outside the source's key range are seen too.
    """

    ui_color = "#e6f2ff"

    def run(self, context: Context) -> list[Segment]:
        settings, key = self.settings, self.pair.src.by_column
        bounds: list[Any] = [settings.from_key]
        with self.pair.source_table() as source:
            while True:
                nxt = source.nth_after(key, bounds[-1], settings.to_key, settings.segment_rows)
                if nxt is None or len(bounds) >= MAX_PARTITIONS:
                    break
                bounds.append(nxt)
        bounds.append(settings.to_key)
        segments = [Segment(lower=encode_value(lo), upper=encode_value(hi)) for lo, hi in itertools.pairwise(bounds)]
        self.log.info("Reconciling %s on %s in %d segment(s): %s", self.pair.src.table, key, len(segments), segments)
        return segments


class ReconcileOperator(_ReconcileBase):
    """Compares one segment of the pair and returns its events (types 1, 2 and 3), or, with
    ``reportOnly``, writes them to a JSON Lines report and returns a summary.

    Progress is saved in the task instance's state store as it goes, so a retry (or a try after the
    worker was killed) continues from the last finished chunk with what was found before it.
    """

    ui_color = "#e6f7ff"

    def __init__(self, *, segment: Segment, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.segment = segment
        self._progress_too_big = False

    def run(self, context: Context) -> Any:
        self.show_as(context, segment_label(self.pair.src.by_column, self.segment))
        store: Store | None = context.get("task_state_store")
        progress = read_progress(store, self.segment)
        if progress is not None:
            self.log.info("Resuming after an earlier try: from %s = %r, %d events so far",
                          self.pair.src.by_column, progress["position"], len(progress["events"]))  # fmt: skip
        else:
            progress = new_progress(self.segment)
        if not progress["done"]:
            progress = self.walk(store, progress)
        if self.min_age and progress["events"]:
            moment = datetime.fromtimestamp(progress["found_at"] + self.min_age, UTC)
            if moment > datetime.now(UTC) and self._needs_waiting(progress["events"]):
                # Deletes (type 3) and rows without a usable update time can only be told from
                # replication lag by looking again later: wait in the triggerer, not in a worker slot.
                self.log.info("minAgeSeconds: %d differences re-checked at %s", len(progress["events"]),
                              moment.isoformat())  # fmt: skip
                if self._save(store, progress):
                    # Imported here: only a deferring task needs it (40 ms of every task process's start).
                    from airflow.providers.standard.triggers.temporal import DateTimeTrigger

                    self.defer(trigger=DateTimeTrigger(moment=moment), method_name="recheck")
                time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))  # not saved: wait here
        return self._finish(context, progress)

    def recheck(self, context: Context, event: Any = None) -> Any:
        """Back from the minAgeSeconds wait: re-check what the pass found, then finish."""
        return self.guarded(self._recheck, context)

    def _recheck(self, context: Context) -> Any:
        progress = read_progress(context.get("task_state_store"), self.segment)
        if progress is None or not progress["done"]:
            self.log.warning(
                "The saved pass of segment %s is gone (expired or deleted): walking it again", self.segment
            )
            return self.run(context)
        return self._finish(context, progress)

    def walk(self, store: Store | None, progress: ReconcileProgress) -> ReconcileProgress:
        """The segment walk from ``progress``, saving as it goes."""
        pair = self.pair
        with pair.source_table() as source, pair.destination_table() as target:
            walk = SegmentWalk(
                pair.source_side(source),
                pair.destination_side(target),
                pair.comparer,
                float(self.settings.target_query_seconds),
                save=lambda p: self._save(store, p),
            )
            return walk.run(progress)

    def _save(self, store: Store | None, progress: ReconcileProgress) -> bool:
        """Saves ``progress`` unless there is no store or it is too big; whether it was saved."""
        if store is None or self._progress_too_big:
            return False
        if progress_size(progress) > MAX_PROGRESS_BYTES:
            self._progress_too_big = True
            self.log.warning("Progress passed %d bytes and is no longer saved: a retry resumes from the last save",
                             MAX_PROGRESS_BYTES)  # fmt: skip
            return False
        write_progress(store, progress)
        return True

    def _finish(self, context: Context, progress: ReconcileProgress) -> Any:
        settings, stats = self.settings, progress["stats"]
        events = progress["events"]
        cleared = 0
        if self.min_age and events:
            kept = self._old_enough(events, self.min_age)
            cleared, events = len(events) - len(kept), kept
        counts = {kind.key: sum(1 for e in events if e["type"] == kind) for kind in Divergence}
        self.log.info(
            "Segment %s: %d source rows in %d chunks (%d checksummed, %d read): %s missing (type 1), "
            "%s different (type 2), %s gone from the source (type 3)",
            self.segment, stats["rows"], stats["chunks"], stats["checksummed"], stats["read"],
            counts["1"], counts["2"], counts["3"],
        )  # fmt: skip
        found = {kind: n for kind, n in counts.items() if n}
        self.record(context, "reconcile", rows=stats["rows"], found=found, chunks=stats["chunks"],
                    **({"cleared": cleared} if cleared else {}),
                    checksummed=stats["checksummed"], read=stats["read"])  # fmt: skip
        result: Any
        if not settings.report_only:
            spool = self.event_spool(context)
            spool.add(events)
            result = spool.finish()
        else:
            path = self._write_report(context, settings, events)
            result = {"report": str(path), "events": counts, **stats}
        store: Store | None = context.get("task_state_store")
        if store is not None:
            clear_progress(store)
        return result

    @cached_property
    def min_age(self) -> int:
        """How long a difference must have lasted before it is reported: ``minAgeSeconds``, and
        with ``confirmSeconds`` at least the confirmation window the pair's scans have learnt
        (the destination's lag: a delete or an edit still in flight is not reported)."""
        configured = self.settings.min_age_seconds
        if not self.config.confirm_seconds:
            return configured
        key = confirm_state_key(self.pair.pair_id)
        try:
            state = read_confirm_state(self.variables.get(key, None), where=f"Variable {key}")
        except StateError as e:
            self.log.warning("%s: waiting confirmSeconds", e)
            return max(configured, self.config.confirm_seconds)
        window = Confirmer(state, self.config.confirm_seconds).window(time.time())
        return max(configured, math.ceil(window))

    def _needs_waiting(self, events: list[Event]) -> bool:
        with self.pair.source_table() as source:
            return needs_waiting(events, datable=self._row_time(source) is not None)

    def _row_time(self, source: Any) -> Any:
        """How ``src.updateColumn`` stores time, when it can be compared with a cut-off."""
        try:
            return self.pair.column_time(source)
        except TimeColumnError as error:  # e.g. text in a format that does not sort: wait instead of dating
            self.log.warning("minAgeSeconds cannot read %s (%s): waiting instead", self.pair.src.update_column, error)
            return None

    def _old_enough(self, events: list[Event], min_age: int) -> list[Event]:
        """Drop what replication lag explains: divergences that are gone when looked at again, and
        those whose source row changed in the last ``min_age`` seconds."""
        pair = self.pair
        keys = [k for e in events for k in lookup_keys(e.get("byValue"))]
        with pair.source_table() as source, pair.destination_table() as target:
            writer = self._row_time(source)
            src_rows, des_rows, stamps = pair.recheck_rows(source, target, keys, stamp=writer is not None)
        recent: set[str] = set()
        if writer is not None and stamps:
            cutoff = writer.lower(datetime.now(UTC) - timedelta(seconds=min_age))
            recent = {str(row[1]) for row, stamp in zip(src_rows, stamps) if stamp is not None and stamp >= cutoff}
        kept = settled(events, pair.comparer.diff(src_rows, des_rows), recent)
        self.log.info("minAgeSeconds %d: %d of %d events re-checked and kept", min_age, len(kept), len(events))
        return kept

    def _write_report(self, context: Context, settings: Reconcile, events: list[Event]) -> Path:
        base = Path(settings.report_dir or Path(os.environ.get("AIRFLOW_HOME", ".")) / "cupid-reports")
        folder = base / path_part(self.dag_id) / path_part(str(context["run_id"]))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"segment-{context['ti'].map_index:04d}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for event in events:
                out.write(json.dumps(event, ensure_ascii=False) + "\n")
        tmp.replace(path)
        self.log.info("Wrote %d events to %s", len(events), path)
        return path
