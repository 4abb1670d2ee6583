"""What a repair task decided and applied so far, kept in its task instance's state store: a retry,
or a try after the worker was killed mid-apply, neither applies a fix twice nor counts one twice,
and an approval given once is not asked for again."""

from __future__ import annotations

from enum import StrEnum
from typing import TypedDict

from cupid_airflow.core.codec import STATE_VERSION, StateError, Store, check_version, decoding

__all__ = ["PROGRESS_KEY", "Outcome", "RepairProgress", "RepairState"]

#: The task state store key (one task instance's own store).
PROGRESS_KEY = "repair_progress"


class Outcome(StrEnum):
    """What became of one event's repair: one character each, in the event list's order."""

    PENDING = "."  # nothing decided yet (or failed: tried again)
    APPLIED = "a"  # its statement changed the row
    SKIPPED = "s"  # its guard found the row changed since the compare: nothing written
    FAILED = "f"  # the database refused the statement for this row (a constraint, a value)
    SETTLED = "e"  # the destination held what the fix would write already
    MOVED = "m"  # its rows moved on (a newer source version, a changed row): not this event's

    @property
    def final(self) -> bool:
        """Whether a later try leaves the event alone (a failed one is tried again)."""
        return self not in (Outcome.PENDING, Outcome.FAILED)


class RepairState(TypedDict):
    """:class:`RepairProgress` as stored: small enough to rewrite after every batch (one byte an
    event, 100 KB for 100,000 events)."""

    version: int
    events: str  # EventDigest of the task's events: another list is never misread
    asked: str  # one character an event: "1" where its fix was in the plan a person was asked about
    approved: str  # the same, of the plan a person approved ("": none; a rejection is not kept: clearing asks again)
    outcomes: str  # one Outcome character an event
    flight: list[int]  # positions of the batch being committed when this was saved


class RepairProgress:
    """One repair task's outcomes while it applies."""

    def __init__(self, digest: str, count: int) -> None:
        self.digest = digest
        self.outcomes = [Outcome.PENDING] * count
        self.asked: set[int] = set()
        self.approved: set[int] = set()  # an approval holds for these events' fixes only
        self.flight: list[int] = []

    @classmethod
    def read(cls, store: Store | None, digest: str, count: int) -> RepairProgress:
        """What earlier tries did with the event list of this digest (nothing, for another list)."""
        found = cls(digest, count)
        data = store.get(PROGRESS_KEY, None) if store is not None else None
        if data is None:
            return found
        if not isinstance(data, dict):
            raise StateError(f"task state {PROGRESS_KEY} holds {type(data).__name__}, not repair progress")
        check_version("repair progress", data)
        if data.get("events") != digest:  # the upstream task ran again: start over (the guards hold)
            return found
        with decoding(f"task state {PROGRESS_KEY}", "clear the task to plan its repairs again"):
            outcomes = [Outcome(c) for c in data["outcomes"]]
            if len(outcomes) != count:
                raise ValueError(f"{len(outcomes)} outcomes for {count} events")
            flight = [int(p) for p in data["flight"]]
            if not all(0 <= p < count for p in flight):
                raise ValueError("a position in flight outside the event list")
            found.outcomes, found.flight = outcomes, flight
            found.asked, found.approved = _positions(data["asked"], count), _positions(data["approved"], count)
        return found

    def write(self, store: Store | None) -> None:
        if store is None:
            return
        state = RepairState(
            version=STATE_VERSION,
            events=self.digest,
            asked=_mask(self.asked, len(self.outcomes)),
            approved=_mask(self.approved, len(self.outcomes)),
            outcomes="".join(self.outcomes),  # (each an Outcome: a str of one character)
            flight=self.flight,
        )
        store.set(PROGRESS_KEY, state)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o is outcome)


def _mask(positions: set[int], count: int) -> str:
    if not positions:
        return ""
    mask = bytearray(b"0" * count)
    for i in positions:
        mask[i] = ord("1")
    return mask.decode()


def _positions(mask: str, count: int) -> set[int]:
    if mask and (len(mask) != count or set(mask) - {"0", "1"}):
        raise ValueError("a mask of another length, or not of 0 and 1")
    return {i for i, c in enumerate(mask) if c == "1"}
