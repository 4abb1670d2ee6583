"""What a run, and a pair over time, found and delivered: the sums behind the run note and the
cupid view, from the tasks' :class:`~cupid_airflow.core.tally.Tally` records alone (no log is
read, no user database is queried)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from cupid_airflow.core.codec import StateError
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.tally import Tally, read_tally

__all__ = ["NOTE_PREFIX", "REPAIR_FIGURES", "REPAIR_WORDS", "RunFigures", "run_note"]

#: How a note cupid wrote starts: such a note is cupid's to replace, any other is the user's.
NOTE_PREFIX = "cupid: "
#: Airflow keeps at most this many characters of a note.
NOTE_MAX_LEN = 1000
#: A repair task's figures (:class:`~cupid_airflow.core.tally.Tally`), as the note and the view show them.
REPAIR_FIGURES = (
    "planned", "repaired", "skipped", "repair_failed", "settled", "moved", "awaiting", "held", "rejected",
)  # fmt: skip
#: How the note says each (the view shows the same words).
REPAIR_WORDS = {
    "planned": "planned", "repaired": "repaired", "skipped": "skipped (row moved on)", "repair_failed": "failed",
    "awaiting": "awaiting approval", "held": "held for approval (not applied from a scan run)",
    "rejected": "rejected or timed out", "settled": "already repaired", "moved": "moved on before the plan",
}  # fmt: skip


@dataclass(slots=True)
class RunFigures:
    """One run's sums: rows compared, divergences by type, and what became of their callbacks."""

    rows: int = 0
    found: Counter[str] = field(default_factory=Counter)
    events: int = 0  # callbacks to deliver
    delivered: int = 0
    undelivered: int = 0  # left when the last callback try ended
    chunks: int = 0
    checksummed: int = 0
    read: int = 0
    tasks: int = 0  # tallies summed: 0 means the run recorded nothing (yet)
    unreadable: int = 0  # records under the tally's key that do not have its shape: skipped
    max_id: int | None = None  # the source's highest id, as the run's scan read it
    candidates: int = 0  # divergences held for confirmation
    cleared: int = 0  # candidates found equal when looked at again: in flight, not lost
    waiting: int | None = None  # candidates waiting after the run's scan (None: it did not say)
    hot: int | None = None
    lag: float | None = None  # the destination's lag the scan had learnt
    repairs: Counter[str] = field(default_factory=Counter)  # repair tallies: planned, repaired, skipped, ...
    scripts: list[str] = field(default_factory=list)  # where the run's fix SQL is

    @classmethod
    def of(cls, tallies: Iterable[Tally]) -> RunFigures:
        figures = cls()
        for tally in tallies:
            figures.add(tally)
        return figures

    @classmethod
    def of_records(cls, records: Iterable[Any]) -> RunFigures:
        """The sums of a run's stored records (decoded XCom values): each is checked
        (:func:`~cupid_airflow.core.tally.read_tally`), and one that does not read is counted in
        :attr:`unreadable` instead of summed."""
        figures = cls()
        for record in records:
            try:
                tally = read_tally(record)
            except StateError:
                figures.unreadable += 1
                continue
            figures.add(tally)
        return figures

    def add(self, tally: Tally) -> None:
        self.tasks += 1
        self.rows += tally.get("rows", 0)
        for kind, count in (tally.get("found") or {}).items():
            self.found[str(kind)] += int(count)
        self.events += tally.get("events", 0)
        self.delivered += tally.get("delivered", 0)
        self.undelivered += tally.get("failed", 0)
        self.chunks += tally.get("chunks", 0)
        self.checksummed += tally.get("checksummed", 0)
        self.read += tally.get("read", 0)
        if tally.get("max_id") is not None:
            self.max_id = tally["max_id"]
        self.candidates += tally.get("candidates", 0)
        self.cleared += tally.get("cleared", 0)
        if "waiting" in tally:
            self.waiting, self.hot, self.lag = tally["waiting"], tally.get("hot", 0), tally.get("lag")
        if tally.get("task") == "repair":
            record: dict[str, Any] = dict(tally)
            for key in REPAIR_FIGURES:
                self.repairs[key] += record.get(key, 0)
            if "script" in tally:
                self.scripts.append(tally["script"])

    def merge(self, other: RunFigures) -> None:
        """Add another run's sums to these (a pair's totals over its runs)."""
        self.rows += other.rows
        self.found.update(other.found)
        self.events += other.events
        self.delivered += other.delivered
        self.undelivered += other.undelivered
        self.chunks += other.chunks
        self.checksummed += other.checksummed
        self.read += other.read
        self.tasks += other.tasks
        self.unreadable += other.unreadable
        self.candidates += other.candidates
        self.cleared += other.cleared
        self.repairs.update(other.repairs)

    @property
    def divergences(self) -> int:
        return sum(self.found.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "found": {kind.key: self.found.get(kind.key, 0) for kind in Divergence},
            "events": self.events,
            "delivered": self.delivered,
            "undelivered": self.undelivered,
            "unreadable_records": self.unreadable,
            "candidates": self.candidates,
            "cleared_in_flight": self.cleared,
            "repairs": {key: self.repairs.get(key, 0) for key in REPAIR_FIGURES},
        }


def _found_text(found: Counter[str]) -> str:
    parts = [f"{found[kind.key]:,} {kind.label}" for kind in Divergence if found.get(kind.key)]
    return ", ".join(parts) if parts else "nothing"


def _repairs_text(repairs: Counter[str]) -> str:
    parts = [f"{repairs[key]:,} {word}" for key, word in REPAIR_WORDS.items() if repairs.get(key)]
    return ", ".join(parts) or "nothing to repair"


def run_note(figures: RunFigures, state: str, reconcile: bool = False) -> str:
    """The run's note in the UI: what it found (confirmed) by type, what it held to confirm and
    saw cleared in flight, and what its callbacks did, in one line a reader can act on
    (``state`` is the run's final state)."""
    what = "source rows walked" if reconcile else "source rows compared"
    text = f"{NOTE_PREFIX}{figures.rows:,} {what}; found {_found_text(figures.found)}"
    if figures.divergences:
        text += f" (type 1/2/3: {'/'.join(str(figures.found.get(kind.key, 0)) for kind in Divergence)})"
    if figures.candidates or figures.cleared or figures.waiting:  # a run that held nothing says nothing of it
        text += f"; {figures.candidates:,} held to confirm, {figures.cleared:,} cleared in flight"
        if figures.waiting is not None:
            text += f", {figures.waiting:,} waiting" + (f" ({figures.hot:,} hot)" if figures.hot else "")
    if figures.events or figures.delivered:
        text += f". Callbacks: {figures.delivered:,} delivered"
        if figures.undelivered:
            text += f", {figures.undelivered:,} not delivered"
    if figures.repairs:
        text += f". Repairs: {_repairs_text(figures.repairs)}"
        if figures.scripts:
            text += f"; fix SQL in {PurePath(figures.scripts[0]).parent}"
    if reconcile and figures.chunks:
        text += f". {figures.chunks:,} chunks: {figures.checksummed:,} checksummed, {figures.read:,} read"
    if figures.unreadable:
        text += f". {figures.unreadable:,} task record(s) could not be read and are not counted"
    if state.lower().endswith("failed"):
        text += ". The run failed: see its failed tasks"
    return (text + ".")[:NOTE_MAX_LEN]
