"""Repairs of confirmed divergences: what to write to the destination so that it holds what the
source holds, each change guarded so that it changes nothing if the row moved on after it was
compared. No database here: the plan is made from the events and both sides' rows read again by
key; :meth:`cupid_airflow.hooks.table.Table.fix_statements` writes it in the destination's SQL.

Per confirmed event (:class:`~cupid_airflow.core.divergence.Divergence`):

* **missing** (type 1): an INSERT of the source row's mapped columns, guarded by the key's absence;
* **different** (type 2): an UPDATE of the columns that differ, guarded by the key and every
  mapped column still holding the value compared (NULL-safe);
* **gone** (type 3, reconcile): a DELETE, guarded the same way.

An event whose rows no longer stand as it reported is not planned but counted *moved on*: the
destination row changed (replication, or a person, got there first), the source row changed (a
new version: a new candidate, confirmed on its own) or was deleted, or the two agree now. The
rows are read as typed values, so a repair writes the source's exact value (bytes, decimals,
times), not the text a callback carries; the guard holds the destination's typed values, equal as
text to what the event reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from cupid_airflow.core.compare import to_text, values_equal
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import Event

__all__ = ["Fix", "RepairColumns", "RepairKind", "RepairPlan", "plan_repairs"]


class RepairKind(StrEnum):
    """The statement that repairs one divergence."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class RepairColumns:
    """How the pair's columns map: the source's key and mapped columns, the destination's key and
    the columns they map to (in the same order)."""

    src_key: str
    src_columns: tuple[str, ...]
    des_key: str
    des_columns: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.src_columns) != len(self.des_columns):
            raise ValueError("as many source as destination columns")


@dataclass(frozen=True)
class Fix:
    """One repair: ``values`` are written (an INSERT's every column, an UPDATE's differing ones);
    ``guard`` is what the destination row must still hold, its key first (an INSERT's: the key
    alone, which no row may hold)."""

    kind: RepairKind
    event_id: str
    values: tuple[tuple[str, Any], ...]
    guard: tuple[tuple[str, Any], ...]


@dataclass
class RepairPlan:
    fixes: list[Fix] = field(default_factory=list)
    # event ids whose destination holds what the fix would write already (replication, a person
    # or an earlier try of this repair got there first)
    settled: list[str] = field(default_factory=list)
    # event ids whose rows moved on otherwise (a newer source version, a changed destination row):
    # nothing of this event's to write
    moved: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Fixes by kind (``insert``, ``update``, ``delete``)."""
        counts: dict[str, int] = {}
        for fix in self.fixes:
            counts[fix.kind.value] = counts.get(fix.kind.value, 0) + 1
        return counts

    def approval_reason(self, approve_rows: int) -> str | None:
        """Why a person must approve this plan before it is applied (None: no need): deletes
        cannot be undone from what cupid knows, and a plan past ``approve_rows`` is more than a
        replication slip."""
        counts = self.counts()
        if counts.get(RepairKind.DELETE.value):
            return f"{counts[RepairKind.DELETE.value]:,} deletes"
        if len(self.fixes) > approve_rows:
            return f"{len(self.fixes):,} rows to change, more than approveRows={approve_rows:,}"
        return None


def plan_repairs(
    events: Iterable[Event],
    src_rows: Sequence[Sequence[Any]],
    des_rows: Sequence[Sequence[Any]],
    columns: RepairColumns,
) -> RepairPlan:
    """The fixes for ``events``, given the source rows ``(key, *src_columns)`` and destination rows
    ``(key, *des_columns)`` read now for their keys."""
    src_by = _by_key(src_rows)
    des_by = _by_key(des_rows)
    plan = RepairPlan()
    for event in events:
        key = event.get("byValue")
        kind = Divergence(int(event["type"]))
        src = src_by.get(key) if key is not None else None
        des = des_by.get(key, []) if key is not None else []
        fix = _fix(kind, event, src, des, columns)
        if isinstance(fix, Fix):
            plan.fixes.append(fix)
        elif fix is _Unplanned.SETTLED:
            plan.settled.append(event["eventId"])
        else:
            plan.moved.append(event["eventId"])
    return plan


class _Unplanned(Enum):
    """Why an event has no fix."""

    SETTLED = "the destination holds what the fix would write"
    MOVED = "its rows moved on"


def _fix(
    kind: Divergence, event: Event, src: list[Sequence[Any]] | None, des: list[Sequence[Any]], columns: RepairColumns
) -> Fix | _Unplanned:
    """The event's fix, or why it has none."""
    event_id = event["eventId"]
    if kind is Divergence.GONE:
        if src:
            return _Unplanned.MOVED
        if not des:
            return _Unplanned.SETTLED
        if len(des) != 1 or not _as_reported(des[0][1:], columns.des_columns, event.get("desColumn")):
            return _Unplanned.MOVED
        return Fix(RepairKind.DELETE, event_id, (), _as_destination(des[0], columns))
    if not src or len(src) != 1 or not _as_reported(src[0][1:], columns.src_columns, event.get("srcColumn")):
        return _Unplanned.MOVED  # deleted, re-keyed, ambiguous or a newer version since: not this event's to repair
    row = src[0]
    if len(des) == 1 and not _differing(row, des[0]):
        return _Unplanned.SETTLED
    if kind is Divergence.MISSING:
        if des:
            return _Unplanned.MOVED
        values = _as_destination(row, columns)
        return Fix(RepairKind.INSERT, event_id, values, values[:1])
    if len(des) != 1 or not _as_reported(des[0][1:], columns.des_columns, event.get("desColumn")):
        return _Unplanned.MOVED
    differing = [
        (name, value)
        for name, value, now in zip(columns.des_columns, row[1:], des[0][1:], strict=True)
        if value != now and not values_equal(value, now)
    ]
    return Fix(RepairKind.UPDATE, event_id, tuple(differing), _as_destination(des[0], columns))


def _differing(src: Sequence[Any], des: Sequence[Any]) -> bool:
    """Whether a source row ``(key, *columns)`` and a destination row differ in a mapped column."""
    return any(value != now and not values_equal(value, now) for value, now in zip(src[1:], des[1:], strict=True))


def _as_destination(row: Sequence[Any], columns: RepairColumns) -> tuple[tuple[str, Any], ...]:
    """A row ``(key, *columns)`` as destination columns and values, the key first (once, when a
    mapped column is the key too)."""
    guard = {columns.des_key: row[0]}
    for name, value in zip(columns.des_columns, row[1:], strict=True):
        guard.setdefault(name, value)
    return tuple(guard.items())


def _as_reported(values: Sequence[Any], names: Sequence[str], reported: Mapping[str, Any] | None) -> bool:
    """Whether a row's values read now render as the event reported them (its own columns only:
    a source event also carries the id and key)."""
    if reported is None:
        return False
    return all(to_text(value) == reported.get(name) for name, value in zip(names, values, strict=True))


def _by_key(rows: Sequence[Sequence[Any]]) -> dict[str | None, list[Sequence[Any]]]:
    """Rows by their key as an event's ``byValue`` renders it."""
    by: dict[str | None, list[Sequence[Any]]] = {}
    for row in rows:
        if row[0] is not None:
            by.setdefault(to_text(row[0]), []).append(row)
    return by
