"""Confirming divergences before they are called back: what replication lost, never what it still
has in flight.

A divergence is first a *candidate*. It is called back (*confirmed*) only once the destination
has had the time, or shown the progress, to apply it; a candidate found equal when looked at
again was in flight (*cleared*), and one whose source row keeps changing while the destination
follows it is *hot*. No Airflow and no database here: the scan and compare tasks feed in what
they found and saw, and get back what to call back, what to keep waiting, and when to look again.

When a candidate is confirmed (``confirmSeconds`` bounds the whole wait; ``stamp`` is the
commit time of the source row's version, from ``src.updateColumn``, else when it was first seen
diverging):

1. **the bound**: it has waited ``confirmSeconds`` (also: a source version that old was found);
2. **the destination moved past it**: a source change stamped at least :data:`ORDER_MARGIN` later
   is applied: replication applies a table's changes in commit order, so this one would have been
   applied too. A row seen equal proves its version applied only when the destination maps
   ``src.updateColumn`` (else an update of unmapped columns compares equal before it arrives);
   without that, only inserts prove anything: a new row present when first compared (its stamp
   is its insert's), or a row of a higher id present, which says a missing row (type 1) was not
   merely late;
3. **the destination has no later change to show**: no other candidate is stamped after it (it is
   the last change) and it has waited the *window*, the lag the pair has shown (the longest
   time a cleared candidate took to clear, recently; else how soon equal rows were seen), with
   some slack: ``1.25 x lag + 2 s``, at most ``confirmSeconds``.

A candidate behind which later changes are also still missing waits: the destination is behind
(a lag spike), and confirming it on the window learnt before the spike would call back what is
merely late. Each new source version of a candidate waits on its own (its stamp restarts the window). A
candidate whose source changed :data:`HOT_CHANGES` times while waiting is *hot*: reported as hot,
one candidate however often it changes, and looked at as long as it keeps changing; should its
replica stop following it (unchanged for ``confirmSeconds`` while the source changes), it is
confirmed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any, TypedDict

from cupid_airflow.core.codec import STATE_VERSION, StateError, check_version, decoding
from cupid_airflow.core.events import Event

__all__ = [
    "CONFIRM_KEY",
    "HOT_CHANGES",
    "MAX_CANDIDATES",
    "ORDER_MARGIN",
    "Candidate",
    "ConfirmState",
    "Confirmer",
    "Observed",
    "Recheck",
    "Verdict",
    "digest",
    "new_state",
    "read_confirm_state",
]

#: The XCom key under which a mapped compare hands its candidates to the next scan.
CONFIRM_KEY = "cupid_candidates"
#: How much later than a candidate's a change must be stamped for its being applied to say the
#: candidate would have been applied too: transactions commit a little out of stamp order, and
#: DATETIME columns stamp to the second.
ORDER_MARGIN = 2.0
#: A candidate is looked at again no sooner than this after the last look.
MIN_AGE = 1.0
#: Looks at a quiet pair's candidates are at least this far apart (each is a run).
LOOK_GAP = 2.0
#: Source changes while waiting that make a candidate hot.
HOT_CHANGES = 3
#: Candidates a pair keeps waiting; beyond it the oldest are confirmed at once (a first pass or a
#: destination far behind: their rows are old, or the bound would confirm them anyway).
MAX_CANDIDATES = 10_000
#: How long what the destination showed of its lag is remembered.
LAG_MEMORY = 600.0
#: Lag observations kept (the newest).
LAG_SAMPLES = 64
#: The window: ``WINDOW_FACTOR x lag + WINDOW_SLACK``, at least ``WINDOW_SLACK``.
WINDOW_FACTOR = 1.25
WINDOW_SLACK = 2.0


def digest(columns: Mapping[str, Any] | None) -> str:
    """A short fingerprint of a row's compared values (an event's ``srcColumn``/``desColumn``);
    ``""`` for a missing row."""
    if columns is None:
        return ""
    text = json.dumps(columns, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Candidate(TypedDict):
    """A divergence waiting to be confirmed, by the key it is matched on (``byValue``)."""

    type: int  # the Divergence it was last found as
    stamp: float | None  # commit time (epoch) of the source version compared, None: unknown
    id: int | None  # the source row's id
    seen: float  # when this source version was first seen diverging
    looked: float  # when it was last looked at
    first: float  # when the key first became a candidate
    src: str  # digest of the source version compared
    des: str  # digest of the destination row ("" missing)
    des_since: float  # when the destination row last changed (or was first seen)
    changes: int  # source versions seen while waiting
    hot: bool


class ConfirmState(TypedDict):
    """A pair's confirmation state, kept in the Variable ``cupid.<dag_id>.confirm`` (the scan is
    its only writer): candidates, what the destination has shown of its progress and lag, the
    mapped compares whose candidates are still to be merged, and the confirmed events handed to
    a run (kept until that run holds them: a killed scan sends them again, never loses them)."""

    version: int
    candidates: dict[str, Candidate]
    watermark: float | None  # the newest source stamp seen applied
    watermark_id: int | None  # the highest source id seen applied (pairs without stamps)
    cleared: list[list[float]]  # [observed at, delay]: how long cleared candidates took
    fast: list[list[float]]  # [observed at, age]: how old rows were when first seen applied
    pending: list[list[Any]]  # [run id, mapped compares]: candidates not merged yet
    outbox: dict[str, list[Event]]  # run id -> confirmed events handed to it


def new_state() -> ConfirmState:
    return ConfirmState(
        version=STATE_VERSION, candidates={}, watermark=None, watermark_id=None, cleared=[], fast=[], pending=[],
        outbox={},
    )  # fmt: skip


def read_confirm_state(data: Any, where: str = "confirmation state") -> ConfirmState:
    """The state as stored (a fresh one when nothing is)."""
    if data is None:
        return new_state()
    if not isinstance(data, dict):
        raise StateError(f"{where} holds {type(data).__name__}, not an object")
    check_version(where, data)
    fix = (
        "fix it in Admin -> Variables, or delete it: the candidates waiting in it are forgotten until the pair's "
        "next safety run or a reconcile finds them again"
    )
    with decoding(where, fix):
        state = new_state()
        for key, c in (data.get("candidates") or {}).items():
            state["candidates"][str(key)] = Candidate(
                type=int(c["type"]), stamp=_number(c.get("stamp")), id=_whole(c.get("id")), seen=float(c["seen"]),
                looked=float(c["looked"]), first=float(c["first"]), src=str(c["src"]), des=str(c["des"]),
                des_since=float(c["des_since"]), changes=int(c["changes"]), hot=bool(c["hot"]),
            )  # fmt: skip
        state["watermark"] = _number(data.get("watermark"))
        state["watermark_id"] = _whole(data.get("watermark_id"))
        state["cleared"] = [[float(a), float(b)] for a, b in data.get("cleared") or []]
        state["fast"] = [[float(a), float(b)] for a, b in data.get("fast") or []]
        state["pending"] = [[str(r), int(n)] for r, n in data.get("pending") or []]
        state["outbox"] = {str(r): list(events) for r, events in (data.get("outbox") or {}).items()}
    return state


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class Observed:
    """What a compare (or re-check) saw of the destination's progress: rows seen applied."""

    stamp: float | None = None  # the newest stamp among them
    id: int | None = None  # the highest id among them
    fast: list[float] = field(default_factory=list)  # ages of recent rows seen applied at first sight
    cleared: list[float] = field(default_factory=list)  # delays of candidates seen applied at last

    def applied(
        self, stamp: float | None, row_id: int | None, now: float, cap: float, *, version: bool, insert: bool,
        first_sight: bool,
    ) -> None:  # fmt: skip
        """One row seen equal. It proves its source version applied when ``version`` (the
        destination maps the update column), and its insert when ``insert`` (a new id, or a
        row that was missing); a new row seen at once proves both (its stamp is its insert's)."""
        if stamp is not None:
            stamp = min(stamp, now)  # a stamp in the future (a clock ahead) must not pass everything
        if (version or (insert and first_sight)) and stamp is not None:
            self.stamp = stamp if self.stamp is None else max(self.stamp, stamp)
        if insert and row_id is not None:
            self.id = row_id if self.id is None else max(self.id, row_id)
        proven = version or insert
        if first_sight and proven and stamp is not None and now - stamp <= cap and len(self.fast) < LAG_SAMPLES:
            self.fast.append(now - stamp)

    def merge(self, other: Observed) -> None:
        if other.stamp is not None:
            self.stamp = other.stamp if self.stamp is None else max(self.stamp, other.stamp)
        if other.id is not None:
            self.id = other.id if self.id is None else max(self.id, other.id)
        self.fast = (self.fast + other.fast)[:LAG_SAMPLES]
        self.cleared += other.cleared

    def as_dict(self) -> dict[str, Any]:
        return {"stamp": self.stamp, "id": self.id, "fast": self.fast, "cleared": self.cleared}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observed:
        with decoding("observed destination progress"):
            return cls(
                stamp=_number(data.get("stamp")),
                id=_whole(data.get("id")),
                fast=[float(a) for a in data.get("fast") or []],
                cleared=[float(a) for a in data.get("cleared") or []],
            )


@dataclass(frozen=True)
class Found:
    """A divergence as a compare found it, with the source version's stamp and id."""

    event: Event
    stamp: float | None
    id: int | None


@dataclass(frozen=True)
class Recheck:
    """A candidate looked at again: its event now (None: the rows are equal), or ``gone`` when the
    source row no longer exists (a delete: reconcile's to report)."""

    key: str
    event: Event | None
    stamp: float | None
    id: int | None
    gone: bool = False


@dataclass
class Verdict:
    """What to do after adding or re-checking: call back ``confirmed``; the rest keeps waiting."""

    confirmed: list[Event] = field(default_factory=list)
    added: int = 0  # new candidates
    cleared: int = 0  # candidates found equal (in flight, now applied)
    gone: int = 0  # candidates whose source row was deleted meanwhile


class Confirmer:
    """Decides over one pair's :class:`ConfirmState` (changed in place) with ``confirmSeconds``
    as ``cap``; ``now`` is passed in, so the decisions are tested against any timeline."""

    def __init__(self, state: ConfirmState, cap: float) -> None:
        self.state = state
        self.cap = float(cap)

    # ------------------------------------------------------------------ what the destination showed

    def observe(self, observed: Observed, now: float) -> None:
        """Take in rows seen applied: the watermark moves, lag samples are kept."""
        state = self.state
        if observed.stamp is not None:
            state["watermark"] = (
                observed.stamp if state["watermark"] is None else max(state["watermark"], observed.stamp)
            )
        if observed.id is not None:
            state["watermark_id"] = (
                observed.id if state["watermark_id"] is None else max(state["watermark_id"], observed.id)
            )
        state["fast"] = _recent(state["fast"] + [[now, a] for a in observed.fast], now)
        state["cleared"] = _recent(state["cleared"] + [[now, d] for d in observed.cleared], now)

    def lag(self, now: float) -> float | None:
        """The lag the destination has shown lately, in seconds; None: it has shown nothing."""
        cleared = [d for at, d in self.state["cleared"] if now - at <= LAG_MEMORY]
        if cleared:
            return max(cleared)
        fast = [a for at, a in self.state["fast"] if now - at <= LAG_MEMORY]
        return median(fast) if fast else None

    def window(self, now: float) -> float:
        """How long a last change waits (rule 3): the lag with slack, ``cap`` when unknown."""
        lag = self.lag(now)
        if lag is None:
            return self.cap
        return min(self.cap, max(WINDOW_SLACK, WINDOW_FACTOR * lag + WINDOW_SLACK))

    # ------------------------------------------------------------------ candidates

    def add(self, found: Iterable[Found], now: float, decide: bool = True) -> Verdict:
        """New divergences, found at ``now``: confirmed at once when a rule already holds (unless
        not ``decide``: found a while ago, they are to be looked at again first), else kept
        waiting. A key already waiting keeps its history (a row found again by another window or
        run)."""
        verdict = Verdict()
        candidates = self.state["candidates"]
        events: dict[str, Event] = {}
        new: set[str] = set()
        for item in found:
            event = item.event
            key = event.get("byValue")
            if key is None:  # a NULL key matches nothing, ever: waiting changes nothing
                verdict.confirmed.append(event)
                continue
            events[key] = event
            src, des = digest(event.get("srcColumn")), digest(event.get("desColumn"))
            known = candidates.get(key)
            if known is not None:
                self._update(known, event, item, src, des, now)
                continue
            candidates[key] = Candidate(
                type=int(event["type"]), stamp=item.stamp, id=item.id, seen=now, looked=now, first=now, src=src,
                des=des, des_since=now, changes=0, hot=False,
            )  # fmt: skip
            new.add(key)
        for key in self._latest_first(events) if decide else []:
            if self._decided(key, now):
                del candidates[key]
                new.discard(key)
                verdict.confirmed.append(events[key])
        self._shed(verdict, events, new)
        verdict.added = len(new)
        return verdict

    def due(self, now: float) -> list[str]:
        """The keys to look at again now: every candidate last looked at :data:`MIN_AGE` ago or
        more (a look costs one lookup by key per side, and is what shows a candidate cleared)."""
        return [k for k, c in self.state["candidates"].items() if now - c["looked"] >= MIN_AGE]

    def recheck(self, results: Iterable[Recheck], now: float) -> Verdict:
        """Candidates looked at again: cleared, gone, changed (waiting on), or confirmed."""
        verdict = Verdict()
        candidates = self.state["candidates"]
        seen_applied = Observed()
        diverging: dict[str, Event] = {}
        for result in results:
            candidate = candidates.get(result.key)
            if candidate is None:
                continue
            candidate["looked"] = now
            if result.gone:
                del candidates[result.key]
                verdict.gone += 1
            elif result.event is None:
                stamp = result.stamp if result.stamp is not None else candidate["stamp"]
                delay = now - (stamp if stamp is not None else candidate["seen"])
                # equal now, after it was not: this version arrived (and a missing row, its insert)
                insert = candidate["type"] == 1
                seen_applied.applied(stamp, result.id, now, self.cap, version=True, insert=insert, first_sight=False)
                seen_applied.cleared.append(max(0.0, delay))
                del candidates[result.key]
                verdict.cleared += 1
            else:
                src, des = digest(result.event.get("srcColumn")), digest(result.event.get("desColumn"))
                self._update(candidate, result.event, Found(result.event, result.stamp, result.id), src, des, now)
                diverging[result.key] = result.event
        self.observe(seen_applied, now)
        for key in self._latest_first(diverging):  # a last change confirmed lets the one before it go too
            if key in candidates and self._decided(key, now):
                del candidates[key]
                verdict.confirmed.append(diverging[key])
        return verdict

    def _latest_first(self, keys: Iterable[str]) -> list[str]:
        candidates = self.state["candidates"]

        def order(key: str) -> tuple[float, float]:
            c = candidates[key]
            return (c["stamp"] if c["stamp"] is not None else c["seen"], float(c["id"] or 0))

        return sorted((k for k in keys if k in candidates), key=order, reverse=True)

    def next_look(self, now: float) -> float | None:
        """When a candidate should be looked at again next (epoch), None when none waits. Each is
        looked at again after half its age so far (at least :data:`LOOK_GAP` apart): how soon
        one is seen cleared is the lag learnt, so looks too sparse would only teach a longer one
        (and a longer window would space them out more); and when a rule could first confirm it
        by time alone. Runs of the pair started by changes look at every candidate anyway."""
        window = self.window(now)
        times = []
        for c in self.state["candidates"].values():
            start = c["stamp"] if c["stamp"] is not None else c["seen"]
            again = c["looked"] + max(LOOK_GAP, 0.5 * (c["looked"] - start))
            by_time = min(start + window, start + self.cap, c["seen"] + self.cap)
            # a look at or after its window found it waiting on later changes: their looks decide
            times.append(min(again, by_time) if by_time > c["looked"] else again)
        return max(min(times), now + MIN_AGE) if times else None

    @property
    def waiting(self) -> int:
        return len(self.state["candidates"])

    @property
    def hot(self) -> int:
        return sum(1 for c in self.state["candidates"].values() if c["hot"])

    # ------------------------------------------------------------------ rules

    def _update(self, candidate: Candidate, event: Event, item: Found, src: str, des: str, now: float) -> None:
        """The candidate as found again (looked at now): a new source version restarts its wait."""
        candidate["type"] = int(event["type"])
        candidate["looked"] = now
        if des != candidate["des"]:
            candidate["des"], candidate["des_since"] = des, now
        if src != candidate["src"]:
            candidate["src"], candidate["stamp"], candidate["id"], candidate["seen"] = src, item.stamp, item.id, now
            candidate["changes"] += 1
            candidate["hot"] = candidate["hot"] or candidate["changes"] >= HOT_CHANGES

    def _decided(self, key: str, now: float) -> bool:
        """Whether the candidate ``key`` is confirmed now (the rules in the module's docstring)."""
        c = self.state["candidates"][key]
        start = c["stamp"] if c["stamp"] is not None else c["seen"]
        age = now - start
        if age >= self.cap or now - c["seen"] >= self.cap:
            return True
        if c["hot"] and now - c["des_since"] >= self.cap:
            return True  # its source keeps changing, and its replica stopped following it
        watermark, watermark_id = self.state["watermark"], self.state["watermark_id"]
        if c["stamp"] is not None and watermark is not None and watermark >= c["stamp"] + ORDER_MARGIN:
            return True  # a later version applied
        if c["type"] == 1 and c["id"] is not None and watermark_id is not None and watermark_id > c["id"]:
            return True  # a later insert applied
        return age >= self.window(now) and not self._later_waiting(key, c)

    def _later_waiting(self, key: str, c: Candidate) -> bool:
        """Whether another candidate is a later change (the destination is behind, not done)."""
        for other_key, other in self.state["candidates"].items():
            if other_key == key:
                continue
            if c["stamp"] is not None and other["stamp"] is not None:
                if other["stamp"] > c["stamp"]:
                    return True
            elif c["id"] is not None and other["id"] is not None:
                if other["id"] > c["id"]:
                    return True
            elif other["seen"] > c["seen"]:
                return True
        return False

    def _shed(self, verdict: Verdict, events: Mapping[str, Event], new: set[str]) -> None:
        """Past :data:`MAX_CANDIDATES`, confirm the oldest of what was just added."""
        candidates = self.state["candidates"]
        excess = len(candidates) - MAX_CANDIDATES
        if excess <= 0:
            return
        for key in list(reversed(self._latest_first(k for k in events if k in candidates)))[:excess]:
            del candidates[key]
            new.discard(key)
            verdict.confirmed.append(events[key])


def _recent(samples: Sequence[list[float]], now: float) -> list[list[float]]:
    return [s for s in samples if now - s[0] <= LAG_MEMORY][-LAG_SAMPLES:]
