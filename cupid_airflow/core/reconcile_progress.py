"""How far a reconcile segment's walk got and what it found, kept in the task instance's state
store as it goes, so a retry resumes from the last saved chunk (the walk is
:mod:`cupid_airflow.core.reconcile`'s)."""

from __future__ import annotations

import json
import time as clock
from typing import Any, TypedDict

from cupid_airflow.core.codec import STATE_VERSION, Store, check_version, decoding
from cupid_airflow.core.events import Event

__all__ = [
    "PROGRESS_KEY",
    "ReconcileProgress",
    "ReconcileStats",
    "Segment",
    "clear_progress",
    "new_progress",
    "progress_size",
    "read_progress",
    "write_progress",
]

#: The task state store key (one task instance's own store).
PROGRESS_KEY = "reconcile_progress"


class Segment(TypedDict):
    """``lower <= key < upper`` of the source key (None: unbounded), encoded values."""

    lower: Any
    upper: Any


class ReconcileStats(TypedDict):
    chunks: int
    checksummed: int
    read: int
    rows: int


class ReconcileProgress(TypedDict):
    """How far one segment's walk got and what it found: a retry resumes from here."""

    version: int
    segment: Segment
    position: Any  # encoded key: the walk continues from here (inclusive lower bound)
    events: list[Event]
    stats: ReconcileStats
    found_at: float  # wall clock of the last chunk that held differences
    done: bool  # the walk finished; only the minAgeSeconds re-check is left


def new_progress(segment: Segment) -> ReconcileProgress:
    return ReconcileProgress(
        version=STATE_VERSION,
        segment=segment,
        position=segment["lower"],
        events=[],
        stats=ReconcileStats(chunks=0, checksummed=0, read=0, rows=0),
        found_at=0.0,
        done=False,
    )


def read_progress(store: Store | None, segment: Segment) -> ReconcileProgress | None:
    """The saved progress of *this* segment, or None (after a clear, plan may cut other segments)."""
    data = store.get(PROGRESS_KEY, None) if store is not None else None
    if not isinstance(data, dict) or data.get("segment") != segment:
        return None
    check_version("reconcile progress", data)
    with decoding(f"task state {PROGRESS_KEY}", "clear the task to walk its segment again"):
        return ReconcileProgress(
            version=STATE_VERSION,
            segment=segment,
            position=data["position"],
            events=list(data["events"]),
            stats=ReconcileStats(
                chunks=int(data["stats"]["chunks"]),
                checksummed=int(data["stats"]["checksummed"]),
                read=int(data["stats"]["read"]),
                rows=int(data["stats"]["rows"]),
            ),
            found_at=float(data["found_at"]) if data.get("found_at") is not None else clock.time(),
            done=bool(data.get("done", False)),
        )


def write_progress(store: Store, progress: ReconcileProgress) -> None:
    store.set(PROGRESS_KEY, progress)


def clear_progress(store: Store) -> None:
    """The segment is finished: a later clear runs a full pass again."""
    store.delete(PROGRESS_KEY)


def progress_size(progress: ReconcileProgress) -> int:
    return len(json.dumps(progress, default=str))
