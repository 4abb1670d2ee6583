"""What a repair task decided and applied so far, kept in its task instance's state store: a retry,
or a try after the worker was killed mid-apply, neither applies a fix twice nor counts one twice,
an approval given once is not asked for again, and one refused is asked for again."""

from __future__ import annotations

from enum import StrEnum
from typing import TypedDict

from cupid_airflow.core.codec import STATE_VERSION, StateError, Store, check_version, decoding
from cupid_airflow.core.repair import RepairPlan

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
    event, 100 KB for 100,000 events). The masks hold one character an event, ``1`` where it
    applies, or are empty."""

    version: int
    events: str  # EventDigest of the task's events: another list is never misread
    asked: str  # events whose fixes were in the plan a person was last asked about
    approved: str  # of those, the ones a person approved: an approval holds for them only
    rejected: str  # the ones a person rejected: asked about again, whatever the plan's size
    outcomes: str  # one Outcome character an event
    flight: list[int]  # positions of the batch being committed when this was saved
    sent: dict[str, int]  # outcomes already counted in metrics: a cleared task counts only what is new


class RepairProgress:
    """One repair task's outcomes while it applies."""

    def __init__(self, digest: str, count: int, store: Store | None = None) -> None:
        self.digest = digest
        self.store = store  # where it is kept (None: nowhere, as in sql mode)
        self.outcomes = [Outcome.PENDING] * count
        self.asked: set[int] = set()
        self.approved: set[int] = set()
        self.rejected: set[int] = set()
        self.flight: list[int] = []
        self.sent: dict[str, int] = {}

    @classmethod
    def read(cls, store: Store | None, digest: str, count: int) -> RepairProgress:
        """What earlier tries did with the event list of this digest (nothing, for another list)."""
        found = cls(digest, count, store)
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
            found.rejected = _positions(data.get("rejected", ""), count)
            found.sent = {str(k): int(v) for k, v in dict(data.get("sent", {})).items()}
        return found

    def write(self) -> None:
        if self.store is None:
            return
        count = len(self.outcomes)
        state = RepairState(
            version=STATE_VERSION,
            events=self.digest,
            asked=_mask(self.asked, count),
            approved=_mask(self.approved, count),
            rejected=_mask(self.rejected, count),
            outcomes="".join(self.outcomes),  # (each an Outcome: a str of one character)
            flight=self.flight,
            sent=self.sent,
        )
        self.store.set(PROGRESS_KEY, state)

    def todo(self) -> list[int]:
        """Positions to plan: undecided and failed events, and those an earlier try applied
        (planned again, they show whether the fix still holds)."""
        return [i for i, outcome in enumerate(self.outcomes) if not outcome.final or outcome is Outcome.APPLIED]

    def settle(self, plan: RepairPlan, position: dict[str, int]) -> int:
        """Take in what a plan of :meth:`todo` found: an event whose destination holds its fix is
        applied when an earlier try applied it or had it in flight (that try may have committed
        it), else settled; one whose rows moved on is moved on, unless an earlier try applied it;
        the fixes of events an earlier try applied and that changed since leave the plan (not
        fought over). The number of applied fixes that still hold."""
        earlier = {i for i, outcome in enumerate(self.outcomes) if outcome is Outcome.APPLIED}
        done = earlier | set(self.flight)
        holding = 0
        for event_id in plan.settled:
            at = position[event_id]
            self.outcomes[at] = Outcome.APPLIED if at in done else Outcome.SETTLED
            holding += at in done
        for event_id in plan.moved:
            if position[event_id] not in earlier:
                self.outcomes[position[event_id]] = Outcome.MOVED
        plan.fixes = [fix for fix in plan.fixes if position[fix.event_id] not in earlier]
        self.flight = []
        return holding

    @property
    def started(self) -> bool:
        """Whether an earlier try decided or applied anything."""
        return any(outcome.final for outcome in self.outcomes)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o is outcome)

    def unsent(self, figures: dict[str, int]) -> dict[str, int]:
        """What of ``figures`` (totals over every try) metrics have not counted yet; now counted."""
        new = {key: value - self.sent.get(key, 0) for key, value in figures.items() if value > self.sent.get(key, 0)}
        self.sent.update({key: max(value, self.sent.get(key, 0)) for key, value in figures.items()})
        return new


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
