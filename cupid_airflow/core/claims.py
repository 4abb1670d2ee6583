"""Claims that are safe against failed runs: a range of ids (or an update window) counts as checked
only when every compare of the run that claimed it succeeded. Until then it stays *open* under
that run's id, and the next run takes it over before claiming anything new. No Airflow: the
operator asks Airflow how each open run's compares ended and passes the answer in.

A run that fails after claiming (a wrong ``updateColumn`` failing ``scan_update``, a compare that
fails for good on one partition) therefore loses nothing: the next run, or the same run's retry,
compares its ranges again. Re-comparing a partition that had succeeded reports its divergences
again under the same event ids (delivery is at-least-once; receivers drop duplicates by id).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GAP_LIMIT", "Takeover", "cap_gaps", "settle_gaps", "start_id_limit", "take_over"]

#: Id gaps watched per DAG. Late commits sit at the top of the id space (an id is allocated when
#: the INSERT runs, so a transaction still open holds one of the newest ids); beyond this many, the
#: lowest gaps (rollbacks and deletes, almost always) are not watched.
GAP_LIMIT = 1000

_E = TypeVar("_E")  # one entry: an id range [after, upto] or a window [since, until]


@dataclass(frozen=True)
class Takeover(Generic[_E]):
    """What a run must check besides its own new claim, and the open set it leaves."""

    inherited: list[_E]  # entries of earlier runs whose compares did not all succeed
    open: dict[str, list[_E]]  # the open set after this run took over (settled runs' entries dropped)


def take_over(open_runs: Mapping[str, Sequence[_E]], run_id: str, finished: Mapping[str, bool | None]) -> Takeover[_E]:
    """Settle the open entries of earlier runs and move the unsettled ones to ``run_id``.

    ``finished[r]`` is True when every compare of run ``r`` succeeded (or there was nothing to
    compare), False when some failed or never ran, None when run ``r`` is still going (its
    entries stay its own). The run's own earlier entries (a retried scan) stay its own too.
    """
    inherited: list[_E] = []
    remaining: dict[str, list[_E]] = {}
    for other, entries in open_runs.items():
        if other == run_id:
            continue
        outcome = finished.get(other)
        if outcome is True:
            continue  # settled: every compare of that run succeeded
        if outcome is None and other in finished:
            remaining[other] = list(entries)
        else:
            inherited.extend(entries)
    own = list(open_runs.get(run_id, []))
    mine = [*own, *[e for e in inherited if e not in own]]
    if mine:
        remaining[run_id] = mine
    return Takeover(inherited=inherited, open=remaining)


def settle_gaps(
    gaps: Sequence[Sequence[float]], present: Sequence[int], now: float, settle_seconds: float
) -> tuple[list[list[int]], list[list[float]], int]:
    """Re-check watched gaps ``[lo, hi, first_seen]`` (ids ``lo..hi`` were missing) against the ids
    ``present`` in them now.

    Returns the id ranges ``[after, upto]`` to compare (each gap in which a row appeared: only late
    rows can be there), the gaps still watched (what is still missing, with its first-seen time),
    and how many expired (watched longer than ``settle_seconds``: forgotten).
    """
    ids = sorted(present)
    compare: list[list[int]] = []
    watched: list[list[float]] = []
    expired = 0
    for lo_f, hi_f, seen in gaps:
        lo, hi = int(lo_f), int(hi_f)
        inside = ids[bisect.bisect_left(ids, lo) : bisect.bisect_right(ids, hi)]
        if inside:
            compare.append([lo - 1, hi])
        if now - seen >= settle_seconds:
            expired += 1
            continue
        start = lo
        for found in inside:
            if found > start:
                watched.append([start, found - 1, seen])
            start = found + 1
        if start <= hi:
            watched.append([start, hi, seen])
    return compare, watched, expired


def cap_gaps(gaps: list[list[float]], limit: int = GAP_LIMIT) -> tuple[list[list[float]], int]:
    """The ``limit`` highest gaps, and how many lower ones were dropped."""
    ordered = sorted(gaps, key=lambda g: g[0])
    return ordered[-limit:] if limit else [], max(0, len(ordered) - limit)


def start_id_limit(cursor: int | None, first_cursor: int, max_id: int | None) -> int:
    """The highest ``start_id`` a run param may restart the insert cursor at.

    Anyone allowed to trigger a run can set ``start_id``, so it may only move the cursor back (to
    re-check, like cupid's ``-s``) or leave it where it is: never forward past ids nobody checked,
    and never past the source's end (new rows would get ids below it). ``first_cursor`` is where
    the cursor starts before the first run (``src.startId - 1``). Skipping ids on purpose takes the
    config (``src.startId``, before the first run) or the Variable, which need more than trigger
    rights. After an ``AUTO_INCREMENT`` reset the cursor is past the end, and the end + 1 is the
    way on.
    """
    current = cursor if cursor is not None else first_cursor
    return min(current + 1, (max_id or 0) + 1)
