"""Confirming divergences before they are called back: what replication lost, never what it still
has in flight.

A divergence is first a *candidate*. It is called back (*confirmed*) only once the destination
has had the time, or shown the progress, to apply it; a candidate found equal when looked at
again was in flight (*cleared*), and one whose source row keeps changing while the destination
follows it is *hot*. No Airflow and no database here: the scan and compare tasks feed in what
they found and saw, and get back what to call back, what to keep waiting, and when to look again.

A candidate is confirmed when one of these holds (``stamp`` is when the source row's version was
written, from ``src.updateColumn``; ``seen``, when cupid first saw this version diverge;
``confirmSeconds`` bounds every wait):

1. **the bound**: it has waited ``confirmSeconds`` since ``seen``; or since ``stamp``, for a
   row that is not *new*: new rows are those inserted since the pair's previous run (ids above
   the highest it read, its ``probe``), and a bulk load may insert rows stamped long ago, all in
   flight. Other rows' stamps are believed here (a first pass, a backfill, a safety run find
   changes written long ago: lost, not late), though a transaction that stamped a row more than
   ``confirmSeconds`` before it committed would be called back early;
2. **the destination moved past it**: replication applies a table's changes in commit order, so
   a change that certainly committed after this one, seen applied, says this one would have
   arrived first. *Certainly after* is judged by time written or by id, never by order of
   stamps (a transaction may write a row long before it commits):

   - a version stamped at least :data:`ORDER_MARGIN` after the candidate was *seen* (visible,
     so committed) was written after it committed. A row seen equal proves its version applied
     only if the destination maps ``src.updateColumn`` (an update of unmapped columns compares
     equal before it arrives), so only such pairs learn this stamp watermark, and a stamp ahead
     of cupid's clock (:data:`FUTURE_TOLERANCE`) is not believed;
   - a row whose id is above the source's highest id read *after* the candidate was seen (its
     ``frontier``) was inserted after it; once present in the destination, so is the candidate
     (any pair: presence needs no stamp);
3. **the destination has no later change to show**: no other candidate (hot ones aside) is a
   later change, and it has waited the *window* since it was seen: the lag the destination has
   shown lately (the longest a cleared candidate stayed missing after it was seen, and at least
   how late new rows typically were when seen present: by their stamps on pairs that map the
   update column, and on any pair by cupid's own clock, rows above the highest id the last scan
   read), ``1.25 x lag + 2 s``, at most ``confirmSeconds``;
4. **the destination stopped following it**: its destination row has not changed for
   ``confirmSeconds`` while the source did, or the same columns have differed with the same
   values that long (a replica that applies changed columns only, and lost one, while it
   follows the row's other columns).

A candidate behind which later changes are also still missing waits: the destination is behind
(a lag spike), and the window learnt before the spike must not call back what is merely late.
Each new source version of a candidate waits on its own. One whose source changed
:data:`HOT_CHANGES` times while waiting is *hot*: one candidate however often it changes,
reported as hot, never holding others back.

A divergence is confirmed once: found again exactly as it was confirmed (the same source version,
by its values, stamp and id, against the same destination row: overlapping update windows, or a
quick look and then the run that claims its row) within :data:`REPORTED_MEMORY`, it is not a
candidate again; runs a person asked to look again (``repeat``) report it all the same.

A pair keeps at most :data:`MAX_CANDIDATES` waiting; what does not fit is *spilled*: handed on,
compact, to be taken in by a later scan when there is room (never confirmed unlooked at, never
dropped).
"""

from __future__ import annotations

import bisect
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
    "LOOK_GAP",
    "MAX_CANDIDATES",
    "ORDER_MARGIN",
    "REPORTED_MEMORY",
    "WAIT_KEY",
    "Candidate",
    "ConfirmState",
    "ConfirmWait",
    "Confirmer",
    "Found",
    "Observed",
    "Recheck",
    "Verdict",
    "digest",
    "new_state",
    "read_candidate",
    "read_confirm_state",
    "read_confirm_wait",
]

#: The XCom key under which a mapped compare (or a scan that spilled) hands candidates over.
CONFIRM_KEY = "cupid_candidates"
#: The task state key under which a scan of an unwatched pair, waiting in the triggerer for its
#: candidates' next look, keeps what it has done (:class:`ConfirmWait`).
WAIT_KEY = "cupid_confirm_wait"
#: How much later than a candidate was seen a change must be stamped to have surely committed
#: after it: DATETIME columns stamp to the second, and the source's clock and cupid's differ a
#: little.
ORDER_MARGIN = 2.0
#: A stamp this far ahead of cupid's clock is not believed (a writer whose clock runs ahead would
#: otherwise pass every candidate).
FUTURE_TOLERANCE = 5.0
#: A candidate is looked at again no sooner than this after the last look.
MIN_AGE = 1.0
#: Looks at a quiet pair's candidates are at least this far apart (each is a run).
LOOK_GAP = 2.0
#: Source changes while waiting that make a candidate hot.
HOT_CHANGES = 3
#: Candidates a pair keeps waiting in its state; more are spilled (handed on to later scans).
MAX_CANDIDATES = 10_000
#: How long what the destination showed of its lag is remembered.
LAG_MEMORY = 600.0
#: Lag observations kept (the newest).
LAG_SAMPLES = 64
#: How long, and for how many keys at most (the newest), what was called back is remembered.
REPORTED_MEMORY = 600.0
REPORTED_KEYS = 1_000
#: The window: ``WINDOW_FACTOR x lag + WINDOW_SLACK``, at least ``WINDOW_SLACK``.
WINDOW_FACTOR = 1.25
WINDOW_SLACK = 2.0


def digest(value: Any) -> str:
    """A short fingerprint of compared values (an event's ``srcColumn``/``desColumn``, the
    differing columns); ``""`` for none (a missing row)."""
    if value is None:
        return ""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _difference(event: Event) -> str:
    """What exactly differs: the differing columns with both sides' values ("missing" for type 1)."""
    if event.get("desColumn") is None:
        return "missing"
    src, des = event.get("srcColumn") or {}, event.get("desColumn") or {}
    columns = event.get("diffColumns") or []
    return digest([[c, des.get(c), src.get(c)] for c in columns] or [src, des])


class Candidate(TypedDict):
    """A divergence waiting to be confirmed, kept under the key it is matched on (``byValue``)."""

    type: int  # the Divergence it was last found as
    stamp: float | None  # when the source version compared was written (epoch), None: undated
    id: int | None  # the source row's id
    new: bool  # inserted since the pair's previous run: its stamp says nothing of when it became visible
    frontier: int | None  # the source's highest id, read after this version was seen: rows above came later
    seen: float  # when this source version was first seen diverging
    looked: float  # when it was last looked at
    first: float  # when the key first became a candidate
    src: str  # digest of the source version compared
    des: str  # digest of the destination row ("" missing)
    des_since: float  # when the destination row last changed (or was first seen)
    diff: str  # digest of what differs (columns and both values)
    diff_since: float  # since when exactly that has differed
    changes: int  # source versions seen while waiting
    hot: bool
    quick: bool  # taken in by a quick look, maybe in flight: its clearing teaches no lag (looks seconds apart)


class ConfirmState(TypedDict):
    """A pair's confirmation state, kept in the Variable ``cupid.<dag_id>.confirm`` (the scan is
    its only writer): candidates, what the destination has shown of its progress and lag, the
    handovers still to take in, the confirmed events handed to a run (kept until that run
    holds them: a killed scan sends them again, never loses them), and what was confirmed lately."""

    version: int
    candidates: dict[str, Candidate]
    watermark: float | None  # the newest source stamp seen applied (pairs whose replica keeps it)
    watermark_id: int | None  # the highest source id seen present
    probes: list[list[Any]]  # [run id, the source's highest id, when read] of the last two scans: ids above came later
    # [observed at, since seen, since stamp]: how long cleared candidates took (since their stamp
    # where it is believed, else since seen too)
    cleared: list[list[float]]
    fast: list[list[float]]  # [observed at, age]: how old new versions were when first seen applied
    pending: list[list[Any]]  # [run id, map indexes, since]: mapped compares' handovers (XCom) not taken in yet
    spilled: int  # candidates that did not fit, kept aside (the Variable ``cupid.<dag_id>.confirm.spill``)
    outbox: dict[str, list[Event]]  # run id -> confirmed events handed to it
    # key -> [source digest, destination digest, when, source stamp, source id] of what was confirmed
    reported: dict[str, list[Any]]


class ConfirmWait(TypedDict):
    """A scan waiting in the triggerer: its tally so far (:class:`~cupid_airflow.core.tally.Tally`)
    and until when it may wait again (epoch s). In the task's state store, not the trigger's
    kwargs: ``dag.test()`` drops those."""

    version: int
    tally: dict[str, Any]
    until: float


def read_confirm_wait(data: Any) -> ConfirmWait:
    with decoding("the scan's wait", "expected what a waiting scan writes"):
        if not isinstance(data, dict):
            raise TypeError(f"{type(data).__name__}, not an object")
        check_version("the scan's wait", data)
        tally = data["tally"]
        if not isinstance(tally, dict):
            raise TypeError("tally is not an object")
        return ConfirmWait(version=STATE_VERSION, tally=tally, until=float(data["until"]))


def new_state() -> ConfirmState:
    return ConfirmState(
        version=STATE_VERSION, candidates={}, watermark=None, watermark_id=None, probes=[], cleared=[], fast=[],
        pending=[], spilled=0, outbox={}, reported={},
    )  # fmt: skip


def read_candidate(c: Mapping[str, Any]) -> Candidate:
    """A candidate as stored or handed over, checked."""
    return Candidate(
        type=int(c["type"]), stamp=_number(c.get("stamp")), id=_whole(c.get("id")), new=bool(c.get("new", True)),
        frontier=_whole(c.get("frontier")),
        seen=float(c["seen"]), looked=float(c["looked"]), first=float(c["first"]), src=str(c["src"]),
        des=str(c["des"]), des_since=float(c["des_since"]), diff=str(c["diff"]), diff_since=float(c["diff_since"]),
        changes=int(c["changes"]), hot=bool(c["hot"]), quick=bool(c.get("quick", False)),
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
        state["candidates"] = {str(k): read_candidate(c) for k, c in (data.get("candidates") or {}).items()}
        state["watermark"] = _number(data.get("watermark"))
        state["watermark_id"] = _whole(data.get("watermark_id"))
        state["probes"] = [[str(r), int(i), float(t)] for r, i, t in data.get("probes") or []]
        state["cleared"] = [[float(c[0]), float(c[1]), float(c[-1])] for c in data.get("cleared") or []]
        state["fast"] = [[float(a), float(b)] for a, b in data.get("fast") or []]
        state["pending"] = [[str(r), [int(i) for i in m], float(t)] for r, m, t in data.get("pending") or []]
        state["spilled"] = int(data.get("spilled") or 0)
        state["outbox"] = {str(r): list(events) for r, events in (data.get("outbox") or {}).items()}
        state["reported"] = {
            str(k): [
                str(r[0]),
                str(r[1]),
                float(r[2]),
                *([_number(r[3]), _whole(r[4])] if len(r) > 3 else [None, None]),
            ]
            for k, r in (data.get("reported") or {}).items()
        }
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
    """What a compare (or re-check) saw of the destination's progress: versions seen applied."""

    stamp: float | None = None  # the newest stamp among them (rows that prove their version)
    id: int | None = None  # the highest id among rows seen present
    fast: list[float] = field(default_factory=list)  # how late new versions or rows were at most, seen applied
    # [since seen, since stamp] of candidates seen applied at last
    cleared: list[list[float]] = field(default_factory=list)

    def applied(
        self, stamp: float | None, row_id: int | None, now: float, cap: float, *, version: bool, present: bool,
        first_sight: bool,
    ) -> None:  # fmt: skip
        """One row seen equal. Its stamp counts when ``version`` (the destination keeps the update
        column: equality proves this version arrived); its id when ``present`` (its insert
        arrived). A stamp from the future is not believed."""
        if stamp is not None and stamp > now + FUTURE_TOLERANCE:
            stamp = None
        if version and stamp is not None:
            self.stamp = stamp if self.stamp is None else max(self.stamp, stamp)
            if first_sight and now - stamp <= cap and len(self.fast) < LAG_SAMPLES:
                self.fast.append(max(0.0, now - stamp))
        if present and row_id is not None:
            self.id = row_id if self.id is None else max(self.id, row_id)

    def arrived_since(self, probe: tuple[int, float] | None, row_id: int | None, now: float, cap: float) -> None:
        """A row seen present whose id is above the source's highest at the last scan (``probe``):
        it was inserted after that read, so it arrived in ``now - read`` at most (cupid's own
        clock: no stamp needed). One sample per batch is enough."""
        if probe is None or row_id is None or row_id <= probe[0]:
            return
        late = now - probe[1]
        if 0 <= late <= cap and len(self.fast) < LAG_SAMPLES:
            self.fast.append(late)

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
                cleared=[[float(c[0]), float(c[-1])] for c in data.get("cleared") or []],
            )


@dataclass(frozen=True)
class Found:
    """A divergence as a compare found it, with the source version's stamp and id."""

    event: Event
    stamp: float | None
    id: int | None
    new: bool = False  # found among new ids (an insert partition)


@dataclass(frozen=True)
class Recheck:
    """A candidate looked at again: its event now (None: the rows are equal), or ``gone`` when the
    source row no longer exists or no longer has the key (a delete: reconcile's to report)."""

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
    repeated: int = 0  # divergences found again exactly as they were called back: not again
    spilled: dict[str, Candidate] = field(default_factory=dict)  # new candidates that did not fit: handed on


class Confirmer:
    """Decides over one pair's :class:`ConfirmState` (changed in place) with ``confirmSeconds``
    as ``cap``; ``version`` says whether the destination keeps the source's update column. ``now``
    is passed in, so the decisions are tested against any timeline."""

    def __init__(self, state: ConfirmState, cap: float, version: bool = True) -> None:
        self.state = state
        self.cap = float(cap)
        self.version = version

    # ------------------------------------------------------------------ what the destination showed

    def observe(self, observed: Observed, now: float) -> None:
        """Take in rows seen applied: the watermarks move, lag samples are kept."""
        state = self.state
        if observed.stamp is not None and self.version:
            state["watermark"] = max(observed.stamp, state["watermark"] or -math.inf)
        if observed.id is not None:
            known = state["watermark_id"]
            state["watermark_id"] = observed.id if known is None else max(known, observed.id)
        state["fast"] = _recent(state["fast"] + [[now, a] for a in observed.fast], now)
        state["cleared"] = _recent(state["cleared"] + [[now, *d] for d in observed.cleared], now)

    def probe(self, run_id: str) -> tuple[int, float] | None:
        """The source's highest id as the last scan of another run read it, and when: ids above
        it are new to ``run_id`` (inserted since), the others were visible by then."""
        others = [p for p in self.state["probes"] if p[0] != run_id]
        return (int(others[-1][1]), float(others[-1][2])) if others else None

    def probed(self, run_id: str, max_id: int | None, at: float) -> None:
        """Note the source's highest id as ``run_id``'s scan read it (at ``at`` or later)."""
        if max_id is not None:
            last = [p for p in self.state["probes"] if p[0] != run_id][-1:]
            self.state["probes"] = [*last, [run_id, max_id, at]]

    def lag(self, now: float) -> float | None:
        """The lag the destination has shown lately, in seconds; None: it has shown nothing. The
        longest a candidate stayed missing after it was seen, and at least how late new versions
        typically were when seen applied (the median: a quiet table's newest version is old).
        Without the latter (no mapped update column, no inserts), the longest time since their
        stamps: timed from when they were seen alone, a candidate seen late would teach a window
        shorter than what a candidate seen early still has in flight."""
        cleared = [c for c in self.state["cleared"] if now - c[0] <= LAG_MEMORY]
        fast = [a for at, a in self.state["fast"] if now - at <= LAG_MEMORY]
        if not fast:
            return max(c[2] for c in cleared) if cleared else None
        return max([median(fast), *(c[1] for c in cleared)])

    def fresh(self, now: float, within: float) -> float | None:
        """The freshest version the destination was seen to apply in the last ``within`` s: how
        old it was then (None: none seen)."""
        recent = [a for at, a in self.state["fast"] if now - at <= within]
        return min(recent) if recent else None

    def window(self, now: float) -> float:
        """How long a last change waits (rule 3): the lag with slack, ``cap`` when unknown."""
        lag = self.lag(now)
        if lag is None:
            return self.cap
        return min(self.cap, max(WINDOW_SLACK, WINDOW_FACTOR * lag + WINDOW_SLACK))

    def window_end(self, now: float, keys: Iterable[str]) -> float | None:
        """When the first window still running among ``keys`` ends (epoch; None: none runs)."""
        window = self.window(now)
        candidates = self.state["candidates"]
        ends = [c["seen"] + window for k in keys if (c := candidates.get(k)) is not None and c["seen"] + window > now]
        return min(ends, default=None)

    # ------------------------------------------------------------------ candidates

    def add(
        self, found: Iterable[Found], now: float, frontier: int | None = None, repeat: bool = False, quick: bool = False
    ) -> Verdict:
        """New divergences, found at ``now`` (``frontier``: the source's highest id, read after
        they were found; None when not read): confirmed at once when a rule already holds, else
        kept waiting; a key already waiting keeps its history (a row found again by another
        window or run) and is decided now, as at a look (the scan skips it when it looks at the
        others: a first version left it to the next run's look, and the candidates behind it
        waited a run longer). What was called back lately, exactly as found now, is not a
        candidate again unless ``repeat`` (a re-check a person asked for). ``quick``: found by a
        quick look (:attr:`Candidate.quick`)."""
        verdict = Verdict()
        candidates = self.state["candidates"]
        events: dict[str, Event] = {}
        again: dict[str, Event] = {}
        for item in found:
            event = item.event
            key = event.get("byValue")
            if key is None:  # a NULL key matches nothing, ever: waiting changes nothing
                verdict.confirmed.append(event)
                continue
            known = candidates.get(key)
            if known is None and not repeat and self._reported(key, item, now):
                verdict.repeated += 1
                continue
            if known is not None:
                self._update(known, event, item, now, frontier)
                (events if key in events else again)[key] = event
                continue
            events[key] = event
            candidates[key] = _new(event, item, now, frontier, quick)
        for key in self._decide([*events, *again], now):
            verdict.confirmed.append(events.pop(key) if key in events else again[key])
        verdict.spilled = self._spill(events)
        verdict.added = len(events) - len(verdict.spilled)
        return verdict

    def take(self, handed: Mapping[str, Mapping[str, Any]]) -> dict[str, Candidate]:
        """Handed-over candidates (from a mapped compare, or spilled), taken in as room allows;
        what does not fit, to be handed on again. A key already waiting keeps its own history."""
        candidates = self.state["candidates"]
        left: dict[str, Candidate] = {}
        for key, data in handed.items():
            if key in candidates:
                continue
            candidate = read_candidate(data)
            if len(candidates) < MAX_CANDIDATES:
                candidates[key] = candidate
            else:
                left[key] = candidate
        return left

    def due(self, now: float) -> list[str]:
        """The keys to look at again now: every candidate last looked at :data:`MIN_AGE` ago or
        more (a look costs one lookup by id and by key, and is what shows a candidate cleared)."""
        return [k for k, c in self.state["candidates"].items() if now - c["looked"] >= MIN_AGE]

    def recheck(
        self, results: Iterable[Recheck], now: float, frontier: int | None = None, behind: bool = False
    ) -> Verdict:
        """Candidates looked at again: cleared, gone, changed (waiting on), or confirmed
        (``frontier``: the source's highest id, read after the look; ``behind``: later changes
        were just seen missing too, so time confirms none: the destination is behind)."""
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
                # equal now, after it was not: the version compared arrived (the current one too,
                # if the replica keeps the update column), and a missing row's insert
                stamp = result.stamp if self.version and result.stamp is not None else candidate["stamp"]
                # how long it stayed missing after it was seen: what the window (counted from
                # when a candidate is seen) must cover; from its stamp, every sample would add
                # the time cupid took to see it, and the window would add it again
                since_seen = now - candidate["seen"]
                dated = candidate["stamp"] if not candidate["new"] and candidate["stamp"] is not None else None
                since_stamp = now - min(candidate["seen"], dated if dated is not None else math.inf)
                seen_applied.applied(stamp, result.id, now, self.cap, version=self.version,
                                     present=candidate["type"] == 1, first_sight=False)  # fmt: skip
                if not candidate["quick"]:
                    seen_applied.cleared.append([max(0.0, since_seen), max(0.0, since_stamp)])
                del candidates[result.key]
                verdict.cleared += 1
            else:
                self._update(candidate, result.event, Found(result.event, result.stamp, result.id), now, frontier)
                diverging[result.key] = result.event
        self.observe(seen_applied, now)
        for key in self._decide(list(diverging), now, behind):
            verdict.confirmed.append(diverging[key])
        return verdict

    def next_look(self, now: float) -> float | None:
        """When a candidate should be looked at again next (epoch), None when nothing waits. Each
        is looked at again after half its age so far (at least :data:`LOOK_GAP` apart): how soon
        one is seen cleared is the lag learnt, so looks too sparse would only teach a longer one;
        and when a rule could first confirm it by time alone. Handovers to take in are looked
        at soon. Never earlier than a second from ``now``: the watcher reads it after the run."""
        if self.state["pending"]:
            return now + LOOK_GAP
        window = self.window(now)
        times = []
        for c in self.state["candidates"].values():
            again = c["looked"] + max(LOOK_GAP, 0.5 * (c["looked"] - c["seen"]))
            by_time = min(c["seen"] + window, c["des_since"] + self.cap, c["diff_since"] + self.cap,
                          c["stamp"] + self.cap if not c["new"] and c["stamp"] is not None else math.inf)  # fmt: skip
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

    def _update(self, candidate: Candidate, event: Event, item: Found, now: float, frontier: int | None) -> None:
        """The candidate as found again (looked at now): a new source version restarts its wait
        (its frontier too: rows inserted before it was written prove nothing of it)."""
        candidate["type"], candidate["looked"] = int(event["type"]), now
        src, des, diff = digest(event.get("srcColumn")), digest(event.get("desColumn")), _difference(event)
        if des != candidate["des"]:
            candidate["des"], candidate["des_since"] = des, now
        if diff != candidate["diff"]:
            candidate["diff"], candidate["diff_since"] = diff, now
        if src != candidate["src"]:
            candidate["src"], candidate["stamp"], candidate["id"], candidate["seen"] = src, item.stamp, item.id, now
            candidate["new"] = False  # a later version: its row was there before
            candidate["frontier"] = None
            candidate["changes"] += 1
            candidate["hot"] = candidate["hot"] or candidate["changes"] >= HOT_CHANGES
        if candidate["frontier"] is None:
            candidate["frontier"] = frontier

    def _reported(self, key: str, item: Found, now: float) -> bool:
        """Whether this divergence was confirmed lately, exactly as it is now: the same source
        version (its values, and its stamp and id: values alone repeat when a row goes X, Y, X)
        against the same destination row."""
        done = self.state["reported"].get(key)
        event = item.event
        return (
            done is not None and now - done[2] <= REPORTED_MEMORY
            and done[:2] == [digest(event.get("srcColumn")), digest(event.get("desColumn"))]
            and done[3:] == [item.stamp, item.id]
        )  # fmt: skip

    def _remember(self, key: str, now: float) -> None:
        """A candidate confirmed now, as it is called back; the oldest and the expired forgotten."""
        reported = self.state["reported"]
        c = self.state["candidates"][key]
        reported.pop(key, None)  # the newest last
        reported[key] = [c["src"], c["des"], now, c["stamp"], c["id"]]
        while len(reported) > REPORTED_KEYS or now - next(iter(reported.values()))[2] > REPORTED_MEMORY:
            del reported[next(iter(reported))]  # kept in the order they were called back

    def _decide(self, keys: list[str], now: float, behind: bool = False) -> list[str]:
        """Of ``keys`` (candidates just found or looked at), the ones confirmed now, taken out of
        the state. Latest change first: confirming the last change lets the one before it go."""
        candidates = self.state["candidates"]
        order = {k: _order(c) for k, c in candidates.items() if not c["hot"]}
        deciding = set(keys)
        later = sorted(o for k, o in order.items() if k not in deciding)  # the others, which wait on
        confirmed = []
        window = self.window(now)
        for key in sorted(keys, key=lambda k: _order(candidates[k]), reverse=True):
            c = candidates[key]
            blocked = behind or (bool(later) and later[-1] > _order(c))
            if self._passed(c, now, window, blocked):
                self._remember(key, now)
                del candidates[key]
                confirmed.append(key)
            elif not c["hot"]:
                bisect.insort(later, _order(c))
        return confirmed

    def _passed(self, c: Candidate, now: float, window: float, blocked: bool) -> bool:
        """Whether the candidate is confirmed now (the rules in the module's docstring)."""
        age = now - c["seen"]
        if age >= self.cap or (not c["new"] and c["stamp"] is not None and now - c["stamp"] >= self.cap):
            return True
        if now - c["des_since"] >= self.cap or now - c["diff_since"] >= self.cap:
            return True  # the destination row stopped following, or follows all but what it lost
        watermark, watermark_id = self.state["watermark"], self.state["watermark_id"]
        if watermark is not None and watermark >= c["seen"] + ORDER_MARGIN:
            return True  # a change written after this one was visible has arrived
        if c["frontier"] is not None and watermark_id is not None and watermark_id > c["frontier"]:
            return True  # a row inserted after this version was seen has arrived
        return age >= window and not blocked

    def _spill(self, events: dict[str, Event]) -> dict[str, Candidate]:
        """Past :data:`MAX_CANDIDATES`, the newest just added leave the state, to be handed on."""
        candidates = self.state["candidates"]
        excess = len(candidates) - MAX_CANDIDATES
        spilled: dict[str, Candidate] = {}
        if excess <= 0:
            return spilled
        for key in sorted(events, key=lambda k: _order(candidates[k]), reverse=True)[:excess]:
            spilled[key] = candidates.pop(key)
        return spilled


def _new(event: Event, item: Found, now: float, frontier: int | None, quick: bool = False) -> Candidate:
    return Candidate(
        type=int(event["type"]), stamp=item.stamp, id=item.id, new=item.new, frontier=frontier, seen=now, looked=now,
        first=now, src=digest(event.get("srcColumn")), des=digest(event.get("desColumn")), des_since=now,
        diff=_difference(event), diff_since=now, changes=0, hot=False, quick=quick,
    )  # fmt: skip


def _order(c: Candidate) -> tuple[float, int]:
    """Which change is later: by stamp (by when it was seen, undated), then by id."""
    return (c["stamp"] if c["stamp"] is not None else c["seen"], c["id"] or 0)


def _recent(samples: Sequence[list[float]], now: float) -> list[list[float]]:
    return [s for s in samples if now - s[0] <= LAG_MEMORY][-LAG_SAMPLES:]
