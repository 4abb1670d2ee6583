"""When a watched source has changed: the watch trigger's decision, apart from its I/O.

The trigger (:mod:`cupid_airflow.triggers.watch`) polls each source table with index-only
queries and hands what it saw to :func:`advance`, which compares it with the pair's
:class:`WatchMarks` (what the pair's last event was fired for) and
says whether to fire. Firing happens only on an *advance*, never while a condition merely holds,
so an idle table costs queries and nothing else, and a table that changed once costs one run.

What counts as an advance:

* **new ids**: the highest ``id`` is above the mark. (A lower maximum, after the newest rows were
  deleted or the table truncated, moves the mark down without firing, so the next insert fires.)
* **updated rows**: the highest ``updateColumn`` value differs from the mark, or as many rows as
  before hold it but a different number: a second row updated within the same second (or other
  unit the column stores) changes the count, not the maximum.

A change the maxima cannot show (a transaction that commits an id below the maximum, an update
stamped earlier than the newest one, updates while a row stamped in the future holds the maximum)
is caught by the insert scan's settle window and the pair's safety schedule, whose runs re-check
the whole interval.

:class:`Pacer` decides when to fire and when to store: a busy table fires at most every
:data:`MIN_EVENT_GAP_SECONDS` (about one inline run: with ``max_active_runs=1`` more events only
queue behind the running one, adding ``asset_event`` rows, not runs), and marks are stored only
:data:`STORE_DELAY_SECONDS` after the event they stand for, once Airflow has surely persisted it:
the triggerer keeps fired events in memory for up to a second and drops them when it is stopped,
so marks stored at once could claim an event nobody saw. A table that keeps changing still gets
its marks stored: those of the newest event old enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypedDict

from cupid_airflow.core.codec import encode_value

__all__ = [
    "MIN_EVENT_GAP_SECONDS",
    "RECHECK_AT_KEY",
    "STORE_DELAY_SECONDS",
    "WATCH_MARKS_KEY",
    "Observation",
    "Pacer",
    "Rechecks",
    "WatchMarks",
    "advance",
    "read_watch_marks",
    "watch_marks_value",
]

#: Shortest time between two events of one pair: about what one small (inline) run takes, so a
#: change right after another is not held back much longer than the run it would queue behind.
MIN_EVENT_GAP_SECONDS = 3.0
#: How long after an event its marks are stored.
STORE_DELAY_SECONDS = 10.0
#: How long to wait before storing again after the state store refused.
STORE_RETRY_SECONDS = 60.0
_IDS, _UPDATES = "ids", "updates"


class WatchMarks(TypedDict):
    """What a pair's watch trigger last fired for, kept in the asset state store of the pair's
    watch asset (key :data:`WATCH_MARKS_KEY`) so a triggerer restart neither loses a change nor
    fires again for an old one. ``max_updated`` is stored as :func:`encode_value` writes it."""

    version: int
    max_id: int | None
    max_updated: Any
    rows_at_max: int
    parts: list[str]  # what has been observed: "ids", "updates"


WATCH_MARKS_KEY = "cupid_watch_marks"
#: Where the scan tells the watcher (in the same asset state store) when to start the next look at
#: the pair's waiting candidates: epoch seconds (:mod:`cupid_airflow.core.confirm`).
RECHECK_AT_KEY = "cupid_recheck_at"
WATCH_MARKS_VERSION = 1


def read_watch_marks(data: Any) -> WatchMarks | None:
    """The marks as stored, or None when there are none or they cannot be read (then the trigger
    fires once and stores fresh ones: a spare run, never a lost change)."""
    if not isinstance(data, dict) or data.get("version") != WATCH_MARKS_VERSION:
        return None
    max_id, rows, parts = data.get("max_id"), data.get("rows_at_max", 0), data.get("parts")
    if not (max_id is None or type(max_id) is int) or type(rows) is not int or not isinstance(parts, list):
        return None
    return WatchMarks(
        version=WATCH_MARKS_VERSION,
        max_id=max_id,
        max_updated=data.get("max_updated"),
        rows_at_max=rows,
        parts=[str(p) for p in parts],
    )


def watch_marks_value(marks: WatchMarks) -> dict[str, Any]:
    """The marks as the state store keeps them (JSON)."""
    return {**marks, "version": WATCH_MARKS_VERSION}


@dataclass(frozen=True)
class Observation:
    """One poll of a source table: only the parts that were due are set (``observed_*``)."""

    observed_ids: bool = False
    max_id: int | None = None
    observed_updates: bool = False
    max_updated: Any = None  # as encode_value stores it: comparable with a stored mark
    rows_at_max: int = 0

    @classmethod
    def from_row(cls, ids: bool, updates: bool, max_id: Any, max_updated: Any, rows_at_max: Any) -> Observation:
        """An observation from the database's answer (drivers return Decimal or str for some types)."""
        return cls(
            observed_ids=ids,
            max_id=None if max_id is None else int(max_id),
            observed_updates=updates,
            max_updated=encode_value(max_updated),
            rows_at_max=int(rows_at_max or 0),
        )


def advance(marks: WatchMarks | None, seen: Observation) -> tuple[WatchMarks, list[str]]:
    """The pair's marks after ``seen``, and what advanced in words (empty: do not fire).

    ``marks`` is None for a pair that was never watched. A part seen for the first time is adopted
    without firing: a new pair's first pass is the run of its safety schedule's latest interval,
    which Airflow starts as soon as the DAG appears (firing too would run every new pair twice).
    """
    if marks is None:
        marks = WatchMarks(version=WATCH_MARKS_VERSION, max_id=None, max_updated=None, rows_at_max=0, parts=[])
    new = marks.copy()
    new["parts"] = list(marks["parts"])
    changes: list[str] = []
    if seen.observed_ids:
        known = _IDS in marks["parts"]
        if known and seen.max_id is not None and (marks["max_id"] is None or seen.max_id > marks["max_id"]):
            changes.append(f"new ids up to {seen.max_id}")
        new["max_id"] = seen.max_id
        if not known:
            new["parts"].append(_IDS)
    if seen.observed_updates:
        known = _UPDATES in marks["parts"]
        if (
            known
            and seen.max_updated is not None
            and (seen.max_updated != marks["max_updated"] or seen.rows_at_max != marks["rows_at_max"])
        ):
            changes.append(f"rows updated at {_shown(seen.max_updated)}")
        new["max_updated"], new["rows_at_max"] = seen.max_updated, seen.rows_at_max
        if not known:
            new["parts"].append(_UPDATES)
    return new, changes


class Pacer:
    """One pair's event and store decisions, given the marks it had stored (None: none)."""

    def __init__(self, stored: WatchMarks | None) -> None:
        self.fired = stored  # what the last event covered (or what was stored)
        self.stored = stored
        self.last_fire = -math.inf
        self.retry_at = -math.inf
        # Marks not stored yet, oldest first, with the time of the event they depend on: storing
        # marks claims every event up to theirs, so each waits until its event is surely saved.
        self.unstored: list[tuple[float, WatchMarks]] = []

    def observe(self, seen: Observation, now: float) -> list[str]:
        """What to fire for ``seen`` (empty: nothing). A change held back by the gap stays
        pending against the last event's marks, so a later observation fires it."""
        new, changes = advance(self.fired, seen)
        if changes and now - self.last_fire < MIN_EVENT_GAP_SECONDS:
            return []
        if changes:
            self.last_fire = now
        if new != self.fired:
            self.unstored.append((self.last_fire, new))
        self.fired = new
        return changes

    def to_store(self, now: float) -> WatchMarks | None:
        """The marks to store now, if any: the newest whose event is :data:`STORE_DELAY_SECONDS` old."""
        if now < self.retry_at:
            return None
        ready = [marks for at, marks in self.unstored if now - at >= STORE_DELAY_SECONDS]
        if not ready:
            return None
        if ready[-1] == self.stored:  # back to what is stored (a held-back change undone): nothing to write
            self.stored_as(ready[-1])
            return None
        return ready[-1]

    def stored_as(self, marks: WatchMarks) -> None:
        """``marks`` are stored: they cover every unstored entry up to the last one equal to them."""
        self.stored = marks
        last = max((i for i, (_, pending) in enumerate(self.unstored) if pending == marks), default=-1)
        del self.unstored[: last + 1]

    def store_failed(self, now: float) -> None:
        self.retry_at = now + STORE_RETRY_SECONDS


def _shown(encoded: Any) -> Any:
    """An encoded value as a person reads it: ``{"datetime": "..."}`` -> the date-time."""
    return next(iter(encoded.values())) if isinstance(encoded, dict) and len(encoded) == 1 else encoded


class Rechecks:
    """When a watcher starts a run to look at its pair's waiting candidates again.

    The scan stores the time of the next look (:data:`RECHECK_AT_KEY`, epoch seconds) in the
    watch asset's state store; a run comes when that time is reached. After each run the watcher
    starts, it reads the key at each poll (:data:`READ_GAP` apart) until the run's scan has stored
    a time newer than the run, for :data:`AFTER_RUN` s at most (a run may queue that long); a
    time from before the run is then believed again, and due (its scan was killed before it
    stored the next one: another run looks). Otherwise the key is read every
    :data:`PERIODIC_READ` s: a run the watcher did not start (a safety or manual one) may have left
    candidates. Times are epoch seconds.
    """

    AFTER_RUN = 120.0
    READ_GAP = 2.0
    PERIODIC_READ = 60.0

    def __init__(self) -> None:
        self.at: float | None = None  # when the next look is due, as last read
        self.next_read = -math.inf  # at once, at start
        self.started = -math.inf  # when the watcher last started a run

    def should_read(self, now: float) -> bool:
        return now >= self.next_read

    def read(self, value: Any, now: float) -> None:
        """The key as read (None: no candidate waits)."""
        at = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        fresh = at is not None and at > self.started
        waiting = now < self.started + self.AFTER_RUN and not fresh  # for the last run's scan to store its time
        self.at = None if waiting else at
        self.next_read = now + (self.READ_GAP if waiting else self.PERIODIC_READ)

    def read_failed(self, now: float) -> None:
        self.next_read = now + 5 * self.READ_GAP

    def due(self, now: float) -> bool:
        return self.at is not None and now >= self.at

    def run_started(self, now: float) -> None:
        """A run was started (for a look, or for changes): it looks, and stores the next time."""
        self.at, self.started = None, now
        self.next_read = now + self.READ_GAP
