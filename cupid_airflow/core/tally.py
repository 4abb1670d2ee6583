"""What one task instance did, in numbers: the record the run note, the cupid view, metrics and
lineage read (:mod:`cupid_airflow.core.drift` sums them), so none of them parses a log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict, cast

from cupid_airflow.core.codec import StateError, check_version, decoding
from cupid_airflow.core.divergence import Divergence

__all__ = ["TALLY_KEY", "TALLY_TASKS", "TALLY_TYPES", "Tally", "combined", "read_tally"]

TALLY_KEY = "cupid_tally"


class Tally(TypedDict, total=False):
    """What one task instance did, in numbers, kept as its XCom :data:`TALLY_KEY`: the run note,
    the cupid view, metrics and lineage all read this, so none of them parses a log. A key is
    present only when the task has that figure."""

    version: int
    task: str  # scan | compare | callback | reconcile | repair
    rows: int  # source rows compared (compare; scan when it compared inline; reconcile)
    found: dict[str, int]  # divergences reported (confirmed), by Divergence.key: "1" missing, "2" different, "3" gone
    events: int  # callback: the events it had to deliver
    delivered: int  # callback: delivered, by this try or an earlier one
    failed: int  # callback: still undelivered when this try ended
    max_id: int  # scan: the source's highest id when it claimed (the backlog's top)
    cursor: int  # scan: the insert cursor after its claim
    until: str  # scan: where its update window ended (ISO 8601, UTC): the update high-water mark
    chunks: int  # reconcile: key chunks walked
    checksummed: int  # reconcile: chunks settled by checksum alone
    read: int  # reconcile: chunks whose rows were read
    candidates: int  # divergences held for confirmation (confirmSeconds), not reported yet
    cleared: int  # candidates found equal when looked at again: in flight, not lost
    waiting: int  # scan: candidates still waiting after it
    hot: int  # scan: of those, the ones whose source keeps changing
    lag: float  # scan: the destination's lag lately, in seconds (absent: unknown)
    planned: int  # repair: fixes planned (written to the fix SQL)
    repaired: int  # repair: applied and read back as applied
    skipped: int  # repair: not applied, the guard found the row changed since the compare
    repair_failed: int  # repair: refused by the destination when this try ended (retried)
    settled: int  # repair: the destination held the fix already (replication got there first)
    moved: int  # repair: the rows moved on before the plan (a newer version): not repaired
    awaiting: int  # repair: fixes waiting for a person's approval
    held: int  # repair: fixes a scan run did not apply because they need approval (it asks no one)
    rejected: int  # repair: events whose repair was rejected, or not approved in time
    script: str  # repair: where its fix SQL is (<repair.dir>/<dag_id>/<run_id>/repair-NNNN.sql)


#: What each figure of a :class:`Tally` must be: a whole number (never a bool), a count that is
#: never negative, divergences by type, an ISO 8601 time.
TALLY_TASKS = frozenset({"scan", "compare", "callback", "reconcile", "repair"})
_TALLY_COUNTS = frozenset(
    {
        "rows",
        "events",
        "delivered",
        "failed",
        "chunks",
        "checksummed",
        "read",
        "candidates",
        "cleared",
        "waiting",
        "hot",
        "planned",
        "repaired",
        "skipped",
        "repair_failed",
        "settled",
        "moved",
        "awaiting",
        "held",
        "rejected",
    }
)
_TALLY_IDS = frozenset({"max_id", "cursor"})
TALLY_TYPES = frozenset(kind.key for kind in Divergence)


#: Figures are 64-bit, as every database and metrics backend keeps them: a sum of 100,000 of them
#: stays a number JSON and Python print (Python refuses to print an int of over 4,300 digits).
_LARGEST = 2**63 - 1


def _whole(value: Any, smallest: int = -_LARGEST - 1) -> int:
    if type(value) is not int or not smallest <= value <= _LARGEST:  # (the value is not quoted: it may be huge)
        raise TypeError(f"a {type(value).__name__} where a whole number from {smallest} to {_LARGEST} belongs")
    return value


def read_tally(data: Any) -> Tally:
    """A task's tally from its XCom, checked figure by figure: anyone allowed to edit a DAG's XComs
    can write this key, and one record of the wrong shape must cost its own figures, not the run
    note or the cupid view of every pair. Keys a newer release added are kept unread."""
    if not isinstance(data, dict):
        raise StateError(f"a task tally holds {type(data).__name__}, not an object")
    check_version("task tally", data)
    with decoding("a task tally", "expected the figures cupid writes (whole numbers, divergences by type)"):
        if data.get("task") not in TALLY_TASKS:
            raise ValueError(f"task is not one of {sorted(TALLY_TASKS)}")
        for key in _TALLY_COUNTS & data.keys():
            _whole(data[key], 0)
        for key in _TALLY_IDS & data.keys():
            _whole(data[key])
        if "found" in data:
            found = data["found"]
            if not isinstance(found, dict) or not set(found) <= TALLY_TYPES:
                raise ValueError(f"found is not divergences by type {sorted(TALLY_TYPES)}")
            for count in found.values():
                _whole(count, 0)
        if "until" in data:
            datetime.fromisoformat(data["until"])
        if "script" in data and not isinstance(data["script"], str):
            raise ValueError("script is not a path")
        if "lag" in data and (type(data["lag"]) not in (int, float) or not 0 <= data["lag"] <= _LARGEST):
            raise ValueError("lag is not a number of seconds")
    return cast(Tally, data)


#: Figures that say what a task did, and add up over its parts; the others say where it left
#: things (positions, what still waits, the lag), and the later part's stand.
_TALLY_ADDED = _TALLY_COUNTS - {"failed", "waiting", "hot"}


def combined(earlier: Tally, later: Tally) -> Tally:
    """One task's tally from two parts of its work (a scan that waited in the triggerer for its
    candidates and went on): what it did adds up, where it left things is the later part's."""
    merged: dict[str, Any] = {**earlier, **later}
    for key in _TALLY_ADDED & (earlier.keys() | later.keys()):
        merged[key] = earlier.get(key, 0) + later.get(key, 0)  # type: ignore[operator]
    found = dict(earlier.get("found", {}))
    for kind, count in later.get("found", {}).items():
        found[kind] = found.get(kind, 0) + count
    if found:
        merged["found"] = found
    return cast(Tally, merged)
