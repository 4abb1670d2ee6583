"""Full reconciliation of a pair: the adaptive chunk size, mismatch tracking, the segment walk
and the minAgeSeconds filter. No Airflow import, no SQL; the walk sees the databases only through
:class:`KeyRangeSide` (``cupid_airflow.pair`` binds a table to it), as reladiff's differ sees a
table segment.

A reconcile walks the whole key space in chunks cut by source row count. For each chunk both
servers compute a checksum (``COUNT(*)`` and a sum of row hashes over the key and the mapped
columns: :mod:`cupid_airflow.dialects.base` has the formula); equal pairs mean equal chunks. Only
chunks whose checksums differ are read row by row, and when most chunks differ (scattered
divergence) checksums are skipped and the chunks read straight away, because then they only add
work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from cupid_airflow.core.codec import decode_value, encode_value
from cupid_airflow.core.compare import PairComparer
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import Event
from cupid_airflow.core.reconcile_progress import ReconcileProgress
from cupid_airflow.core.threads import both_sides

__all__ = [
    "ChunkSizer",
    "KeyRangeSide",
    "MismatchTracker",
    "SegmentWalk",
    "needs_waiting",
    "settled",
]


@dataclass
class ChunkSizer:
    """Rows per chunk, steered so one checksum query takes about ``target`` seconds (as
    pt-table-checksum does): production sources never see a query of unbounded length."""

    target: float
    rows: int = 10_000
    minimum: int = 1_000
    maximum: int = 200_000  # also the most rows a differing chunk reads into memory per side

    def observe(self, rows: int, seconds: float) -> None:
        if rows <= 0:
            return
        rate = rows / max(seconds, 1e-3)
        wanted = int(rate * self.target)
        # Move at most 4x per step: one slow query (a cold cache) must not collapse the size.
        self.rows = max(self.minimum, min(self.maximum, max(self.rows // 4, min(self.rows * 4, wanted))))


@dataclass
class MismatchTracker:
    """Decides per chunk whether checksums are worth computing.

    With few differences, checksums save reading equal chunks. With scattered differences nearly
    every chunk differs and a checksum is pure overhead before the read, so after a run of
    mismatches the reconcile reads chunks directly, and probes with a checksum again now and then
    in case the differences thin out.
    """

    window: int = 3
    threshold: float = 0.5
    probe_every: int = 5
    recent: list[bool] = field(default_factory=list)
    skipped: int = 0

    def use_checksum(self) -> bool:
        if len(self.recent) < self.window or sum(self.recent) / len(self.recent) < self.threshold:
            return True
        self.skipped += 1
        return self.skipped % self.probe_every == 0

    def record(self, mismatched: bool) -> None:
        self.recent.append(mismatched)
        del self.recent[: -self.window]


class KeyRangeSide(Protocol):
    """One side of a pair seen as rows ordered by the match key: what the walk asks of a table."""

    @property
    def thread_safe(self) -> bool: ...

    def nth_key(self, after: Any, before: Any, offset: int) -> Any:
        """The key ``offset`` rows past ``after`` (exclusive; None: from the first), before ``before``."""
        ...

    def checksum(self, lower: Any, upper: Any) -> tuple[int, int] | None:
        """``(count, sum)`` of ``lower <= key < upper``, or None when the database cannot hash."""
        ...

    def rows(self, lower: Any, upper: Any) -> list[tuple[Any, ...]]:
        """The rows of ``lower <= key < upper``: the source's as ``(id, key, *columns)``, the
        destination's as ``(key, *columns)``."""
        ...


#: Save progress at most this often (seconds): a killed try redoes at most this much work.
SAVE_EVERY_SECONDS = 2.0


@dataclass
class SegmentWalk:
    """Walks one segment chunk by chunk: checksums on both sides, rows only where they differ.

    Chunks are cut on the source's key index (``sizer.rows`` rows each, steered to the target
    query time), so the destination's keys outside the source's range fall into the open first
    and last chunks. ``save`` is called with the progress at most every ``save_every`` seconds.
    """

    source: KeyRangeSide
    target: KeyRangeSide
    comparer: PairComparer
    target_seconds: float
    save: Callable[[ReconcileProgress], object] | None = None
    save_every: float | None = None  # None: SAVE_EVERY_SECONDS, read when the walk runs
    sizer: ChunkSizer = field(init=False)
    tracker: MismatchTracker = field(default_factory=MismatchTracker)

    def __post_init__(self) -> None:
        self.sizer = ChunkSizer(self.target_seconds)

    def run(self, progress: ReconcileProgress) -> ReconcileProgress:
        """Walk from ``progress['position']`` to the segment's end; returns the progress, done."""
        stats, events = progress["stats"], progress["events"]
        upper = decode_value(progress["segment"]["upper"])
        position = decode_value(progress["position"])
        last_save = time.monotonic()
        every = SAVE_EVERY_SECONDS if self.save_every is None else self.save_every
        with ThreadPoolExecutor(1, thread_name_prefix="cupid-reconcile") as pool:
            while True:
                nxt = self.source.nth_key(position, upper, self.sizer.rows)
                chunk_upper = upper if nxt is None else nxt
                found, rows, mismatch = self._chunk(pool, position, chunk_upper, stats)
                if found:
                    events.extend(found)
                    progress["found_at"] = time.time()
                self.tracker.record(mismatch)
                stats["chunks"] += 1
                stats["rows"] += rows
                position = chunk_upper
                progress["position"] = encode_value(position)
                if nxt is None:
                    progress["done"] = True
                    return progress
                if self.save is not None and time.monotonic() - last_save >= every:
                    self.save(progress)
                    last_save = time.monotonic()

    def _chunk(self, pool: ThreadPoolExecutor, lower: Any, upper: Any, stats: Any) -> tuple[list[Event], int, bool]:
        """One chunk: (events, source rows, whether it differed)."""
        started = time.monotonic()
        checked = self.tracker.use_checksum()
        rows = 0
        if checked:
            mine, theirs = both_sides(
                pool, self.source, self.target,
                lambda: self.source.checksum(lower, upper), lambda: self.target.checksum(lower, upper),
            )  # fmt: skip
            stats["checksummed"] += 1
            rows = mine[0] if mine else 0
            self.sizer.observe(rows, time.monotonic() - started)
            if mine is not None and mine == theirs:
                return [], rows, False
        found, rows = self.read_chunk(pool, lower, upper)
        stats["read"] += 1
        if not checked:  # the read is this chunk's query: steer the size by it
            self.sizer.observe(rows, time.monotonic() - started)
        return found, rows, bool(found)

    def read_chunk(self, pool: ThreadPoolExecutor, lower: Any, upper: Any) -> tuple[list[Event], int]:
        """Both sides' rows of ``[lower, upper)``, read at once and diffed in one pass."""
        src_rows, des_rows = both_sides(
            pool,
            self.source,
            self.target,
            lambda: self.source.rows(lower, upper),
            lambda: self.target.rows(lower, upper),
        )
        return self.comparer.diff(src_rows, des_rows), len(src_rows)


def needs_waiting(events: Sequence[Event], datable: bool) -> bool:
    """Whether minAgeSeconds must be waited out before a re-check: a delete (type 3) has no source
    row to date it, and without a readable update column no row can be dated."""
    return bool(events) and (not datable or any(e["type"] == Divergence.GONE for e in events))


def settled(before: Sequence[Event], still: Sequence[Event], recent: set[str]) -> list[Event]:
    """What replication lag does not explain, from a re-check after minAgeSeconds.

    Keeps a difference only if it was there before the wait and is still there as the same kind
    (a row deleted at the source during the wait has not had its minAgeSeconds yet), and its
    source row did not change within minAgeSeconds (``recent``: their ``byValue``).
    """
    seen = {(e.get("byValue"), e["type"]) for e in before}
    gone = Divergence.GONE
    return [
        e for e in still
        if (e.get("byValue"), e["type"]) in seen and (e["type"] == gone or str(e.get("byValue")) not in recent)
    ]  # fmt: skip
