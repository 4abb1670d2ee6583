"""When a watched source has changed: the watch trigger's decision, apart from its I/O.

The trigger (:mod:`cupid_airflow.triggers.watch`) polls each source table with index-only
queries and hands what it saw to :func:`advance`, which compares it with the pair's
:class:`~cupid_airflow.core.state.WatchMarks` (what the pair's last event was fired for) and
says whether to fire. Firing happens only on an *advance*, never while a condition merely holds,
so an idle table costs queries and nothing else, and a table that changed once costs one run.

What counts as an advance:

* **new ids**: the highest ``id`` is above the mark. (A lower maximum, after the newest rows were
  deleted or the table truncated, moves the mark down without firing, so the next insert fires.)
* **updated rows**: the highest ``updateColumn`` value differs from the mark, or as many rows as
  before hold it but a different number: a second row updated within the same second (or other
  unit the column stores) changes the count, not the maximum.

A change the maxima cannot show (a transaction that commits an id below the maximum, or an
update stamped earlier than the newest one) is caught by the insert scan's settle window and the
pair's safety schedule, whose runs re-check the whole interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cupid_airflow.core.state import WATCH_MARKS_VERSION, WatchMarks, encode_value

__all__ = ["Observation", "advance"]


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

    ``marks`` is None for a pair that was never watched: its first observation fires once, so a
    new config's first pass starts at once instead of at its first scheduled run.
    """
    if marks is None:
        fresh = WatchMarks(version=WATCH_MARKS_VERSION, max_id=None, max_updated=None, rows_at_max=0)
        new, _ = advance(fresh, seen)
        return new, ["first look at the source"]
    new = marks.copy()
    changes: list[str] = []
    if seen.observed_ids:
        if seen.max_id is not None and (marks["max_id"] is None or seen.max_id > marks["max_id"]):
            changes.append(f"new ids up to {seen.max_id}")
        new["max_id"] = seen.max_id
    if seen.observed_updates:
        if seen.max_updated is not None and (
            seen.max_updated != marks["max_updated"] or seen.rows_at_max != marks["rows_at_max"]
        ):
            changes.append(f"rows updated at {_shown(seen.max_updated)}")
        new["max_updated"], new["rows_at_max"] = seen.max_updated, seen.rows_at_max
    return new, changes


def _shown(encoded: Any) -> Any:
    """An encoded value as a person reads it: ``{"datetime": "..."}`` -> the date-time."""
    return next(iter(encoded.values())) if isinstance(encoded, dict) and len(encoded) == 1 else encoded
