"""Confirmation for one task of a pair: the decisions of :mod:`cupid_airflow.core.confirm` bound to
the pair's tables and its state (the Variable ``cupid.<dag_id>.confirm``).

A compare (in the scan, or a mapped ``compare`` task) dates what it finds by ``src.updateColumn``
and notes what it sees applied; the scan, the state's only writer, keeps the candidates, looks at
them again at each run and hands what is confirmed to delivery. Rows are dated with the column's
own reading of time (:class:`~cupid_airflow.core.partitions.ColumnTime`), in ``src.timezone``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cupid_airflow.core.codec import Store
from cupid_airflow.core.compare import ID_COLUMN, lookup_keys, to_text
from cupid_airflow.core.confirm import (
    CONFIRM_KEY,
    FUTURE_TOLERANCE,
    MAX_CANDIDATES,
    ORDER_MARGIN,
    Candidate,
    Confirmer,
    ConfirmState,
    Found,
    Observed,
    Recheck,
    Verdict,
    read_candidate,
    read_confirm_state,
)
from cupid_airflow.core.errors import PermanentError
from cupid_airflow.core.events import Event
from cupid_airflow.core.partitions import Partition, id_partition, read_partition, rows_at_most, window_partition
from cupid_airflow.names import confirm_spill_key, confirm_state_key

if TYPE_CHECKING:
    from cupid_airflow.core.partitions import ColumnTime
    from cupid_airflow.hooks.table import Table
    from cupid_airflow.pair import SyncPair

__all__ = ["CONFIRM_KEY", "Confirmation", "handed_over"]

#: A scan that just found candidates, and saw the destination apply a version at most this old
#: (seconds from its stamp), looks again before it ends, :data:`QUICK_LOOKS` s after it found
#: them, instead of waiting a run: an in-sync copy's lost changes are called back in seconds.
#: Judged by what this scan saw, not by the window: a lag learnt earlier (an upper bound, from
#: looks seconds apart) must not keep an in-sync copy waiting.
QUICK_LOOK_LAG = 3.0
#: ... or saw one that fresh within this many seconds (a scan whose few rows were all in flight).
QUICK_LOOK_MEMORY = 60.0
#: When the quick looks are (seconds after the candidates were found): rows inserted since prove
#: them at the first; versions stamped :data:`ORDER_MARGIN` later only from the second (DATETIME
#: stamps whole seconds).
QUICK_LOOKS = (1.0, ORDER_MARGIN + 1.0)
#: A window ending this soon (seconds after the compare) gets a quick look of its own when it ends:
#: the last change of a burst, with nothing later to show, is then decided by the run that found
#: it. The quick looks end then at the latest.
QUICK_LOOK_WINDOW = 5.0
WINDOW_MARGIN = 0.25  # the look after the window is that much after its end
#: At most this many rows inserted since (and versions stamped since) are compared by a quick look;
#: with more candidates waiting than this, a scan makes no quick look.
QUICK_LOOK_ROWS = 1_000


class Confirmation:
    """The pair's confirmation state and the lookups a task makes for it.

    :param pair: the pair.
    :param variables: where the state lives (the scan writes it; other tasks only read it).
    :param log: the task's logger.
    :param run_id: the task's run.
    :param cap: ``confirmSeconds`` (the pair's, unless a scan flushes what a pair that no longer
        confirms left waiting: 0).
    :param again: a re-check a person asked for (:func:`~cupid_airflow.run_params.asks_again`):
        what its compares find is a candidate even if it was called back minutes ago.
    """

    def __init__(
        self, pair: SyncPair, variables: Store, log: Any, run_id: str, cap: float | None = None, again: bool = False
    ) -> None:
        self.pair = pair
        self.run_id = run_id
        self.again = again
        self.variables = variables
        self.log = log
        self.key = confirm_state_key(pair.pair_id)
        self.state: ConfirmState = read_confirm_state(variables.get(self.key, None), where=f"Variable {self.key}")
        cap = pair.config.confirm_seconds if cap is None else cap
        self.confirmer = Confirmer(self.state, cap, version=pair.version_mapped)
        self.observed = Observed()  # what this task saw applied, not yet taken into the state
        self.observed_total = Observed()  # all it saw applied (a mapped compare hands it on)
        self.found = 0  # divergences this task found, before confirmation
        self.future = 0  # source stamps ahead of this worker's clock (not believed)
        # after unspill(): what the spill Variable holds until the state is saved, and what it
        # is to hold after (candidates spilled meanwhile join both)
        self._spill_held: dict[str, Candidate] | None = None
        self._spill_after: dict[str, Candidate] | None = None

    @cached_property
    def column_time(self) -> ColumnTime | None:
        """How ``src.updateColumn`` reads as time (one query for a sample value); None: rows
        cannot be dated (no update column, or one cupid cannot read)."""
        if self.pair.src.update_column is None:
            return None
        try:
            with self.pair.source_table() as table:
                return self.pair.column_time(table)
        except PermanentError as e:
            self.log.warning("Confirmation cannot date rows by %s (%s): they wait as undated rows do, "
                             "confirmSeconds at most", self.pair.src.update_column, e)  # fmt: skip
            return None

    def frontier(self, table: Table | None = None) -> int | None:
        """The source's highest id now: a row above it, once present in the destination, was
        inserted after everything this task saw missing."""
        if table is not None:
            return _as_int(table.max_id())
        with self.pair.source_table() as source:
            return _as_int(source.max_id())

    # ------------------------------------------------------------------ what a compare saw

    def seen(self, ids: bool) -> Callable[[Sequence[tuple[Any, ...]], list[Event]], list[Found]]:
        """For :meth:`SyncPair.compare_partition`: each batch's rows (with the update column's
        value last) and events in, the events with their rows' stamps out (``ids``: the
        partition holds claimed ids; those above the last run's probe are new rows). Rows
        compared equal are present in the destination (their ids count); on pairs whose
        destination keeps the update column, their version is applied too (their stamps count).
        How far behind the destination is, at most, is sampled once a batch: by the age of the
        newest version it shows (commit order: everything before it arrived too), else by
        cupid's clock for rows inserted since the last run's probe."""
        stamped = self.pair.src.update_column is not None
        timing = self.column_time if stamped else None
        version = self.pair.version_mapped and timing is not None
        cap = float(self.confirmer.cap)
        probe = self.confirmer.probe(self.run_id)

        def batch(rows: Sequence[tuple[Any, ...]], events: list[Event]) -> list[Found]:
            now = time.time()
            self.found += len(events)
            by_id: dict[str, Event] = {str((e.get("srcColumn") or {}).get("id")): e for e in events}
            found: list[Found] = []
            newest: Any = None
            newest_id: int | None = None
            for row in rows:
                event = by_id.get(str(to_text(row[0]))) if by_id else None
                value = row[-1] if stamped else None
                if event is not None:
                    row_id = _as_int(row[0])
                    new = ids and probe is not None and row_id is not None and row_id > probe[0]
                    found.append(Found(event, self._stamp(timing, value, now), row_id, new))
                    continue
                row_id = _as_int(row[0])
                if row_id is not None and (newest_id is None or row_id > newest_id):
                    newest_id = row_id
                if not version or value is None:
                    continue
                if newest is None or value > newest:
                    newest = value
            applied = self.observed.applied
            if newest is not None:
                applied(self._stamp(timing, newest, now), None, now, cap, version=True, present=False,
                        first_sight=True)  # fmt: skip
            if newest_id is not None:
                applied(None, newest_id, now, cap, version=False, present=True, first_sight=False)
                if newest is None:
                    self.observed.arrived_since(probe, newest_id, now, cap)
            return found

        return batch

    def _stamp(self, timing: ColumnTime | None, value: Any, now: float) -> float | None:
        """A source value of the update column as epoch seconds; one ahead of this clock is noted
        (and not believed by the rules)."""
        if timing is None or value is None:
            return None
        stamp = timing.epoch(value)
        if stamp is not None and stamp > now + FUTURE_TOLERANCE:
            self.future += 1
        return stamp

    def warn_clock(self) -> None:
        if self.future:
            self.log.warning(
                "%d source rows were stamped by %s ahead of this worker's clock (by more than %.0f s): their stamps "
                "prove nothing, and they wait confirmSeconds at most. Check src.timezone and the clocks.",
                self.future, self.pair.src.update_column, FUTURE_TOLERANCE,
            )  # fmt: skip

    def look_past(self, frontier: int | None, seen_at: float) -> tuple[Verdict, frozenset[str]]:
        """The quick look's compare of what changed after this scan's (at ``seen_at``): rows
        inserted above ``frontier``, at most :data:`QUICK_LOOK_ROWS`, and, where the destination
        maps the update column, versions stamped after it, if no more. What the destination
        shows of them is the evidence a later run would find; what differs there becomes a
        candidate now, its wait started (the run that claims its row finds it again: still
        waiting, or confirmed and not again: a quick look consults what was confirmed lately
        even in a run a person asked for). Rows whose key is NULL are left to that run (they
        are confirmed at once, and every look would find them again). What adding them
        decided, and their keys."""
        pair = self.pair
        parts: list[Partition] = []
        timing = self.column_time
        with pair.source_table() as source:
            top = self.frontier(source)
            if frontier is not None and top is not None and top > frontier:
                parts.append(id_partition(frontier, min(top, frontier + QUICK_LOOK_ROWS)))
            if pair.version_mapped and timing is not None and pair.src.update_column is not None:
                since, until = timing.window(_instant(seen_at + ORDER_MARGIN), _instant(time.time() + 1))
                window = window_partition(pair.src.update_column, timing.vtype, since, until)
                if rows_at_most(source, [window], QUICK_LOOK_ROWS, ID_COLUMN):  # a busy table: the ids tell
                    parts.append(window)
        found: list[Found] = []
        counted = self.found  # the run's own compare's finds; these are counted as candidates
        for part in parts:
            pair.compare_partition(read_partition(part), found.extend, seen=self.seen(ids=part["kind"] == "ids"))
        self.found = counted
        found = [f for f in found if f.event.get("byValue") is not None]
        now = time.time()
        self.take_in(now)
        frontier = self.frontier() if found else None  # read after: ids above came later
        verdict = self.confirmer.add(found, now, frontier, quick=True)
        self.spill(verdict.spilled)
        return verdict, frozenset(str(f.event.get("byValue")) for f in found)

    @property
    def close_behind(self) -> bool:
        """Whether the destination was seen applying a version :data:`QUICK_LOOK_LAG` s old or
        newer, by this task or in the last minute (then a look a few seconds on is likely to find
        later changes applied; a scan whose few rows were all in flight saw none itself)."""
        if any(late <= QUICK_LOOK_LAG for late in self.observed_total.fast + self.observed.fast):
            return True
        fresh = self.confirmer.fresh(time.time(), QUICK_LOOK_MEMORY)
        return fresh is not None and fresh <= QUICK_LOOK_LAG

    # ------------------------------------------------------------------ decisions

    def take_in(self, now: float, observed: Observed | None = None) -> None:
        """What this task (and ``observed``: a mapped compare's) saw applied, into the state."""
        self.confirmer.observe(self.observed, now)
        self.observed_total.merge(self.observed)
        self.observed = Observed()
        if observed is not None:
            self.confirmer.observe(observed, now)

    def add(self, found: Sequence[Found], now: float, frontier: int | None = None) -> Verdict:
        self.take_in(now)
        return self.confirmer.add(found, now, frontier, repeat=self.again)

    @property
    def quick_keys(self) -> frozenset[str]:
        """The candidates a quick look looks at: every one waiting but the hot (they wait on their
        rows), from this scan or an earlier one; none when more wait than a look compares."""
        keys = frozenset(k for k, c in self.state["candidates"].items() if not c["hot"])
        return keys if len(keys) <= QUICK_LOOK_ROWS else frozenset()

    def quick_look(self, frontier: int | None, seen_at: float, hand_over: Callable[[list[Event]], None]) -> Verdict:
        """The waiting candidates (:attr:`quick_keys`) looked at again :data:`QUICK_LOOKS` s after
        this scan's compare (at ``seen_at``, ``frontier`` read after it), and whenever the first
        window among them ends within :data:`QUICK_LOOK_WINDOW` s of it, each time after
        :meth:`look_past`, until none waits. What a look confirms goes to ``hand_over`` at once:
        the looks after it are for the others."""
        verdict = Verdict()
        looks = [seen_at + after for after in QUICK_LOOKS]
        last = seen_at + QUICK_LOOK_WINDOW + WINDOW_MARGIN
        while looks:
            time.sleep(max(0.0, looks.pop(0) - time.time()))
            past, just = self.look_past(frontier, seen_at)
            hand_over(past.confirmed)
            # later changes missing that could not wait as candidates: time confirms none now
            behind = bool(past.spilled)
            # paced by the looks, not MIN_AGE: a window ending under a second after a look is looked at
            checked = time.time()
            looked = self.recheck(checked, skip=just, only=self.quick_keys, behind=behind)
            hand_over(looked.confirmed)
            for part in (past, looked):
                verdict.confirmed += part.confirmed
                verdict.added += part.added
                verdict.cleared += part.cleared
                verdict.gone += part.gone
                verdict.repeated += part.repeated
            keys = self.quick_keys
            if not keys:
                break
            if not looks and not behind:
                ends = self.confirmer.window_end(checked, keys)  # still running at the look, maybe not now
                if ends is not None and ends + WINDOW_MARGIN <= last:
                    looks.append(ends + WINDOW_MARGIN)
        return verdict

    def recheck(
        self, now: float, skip: frozenset[str] = frozenset(), only: frozenset[str] | None = None, behind: bool = False
    ) -> Verdict:
        """Look at the waiting candidates again (those in ``only``, when given): each source row
        by its id (a candidate follows its row: if the row is gone, or now has another key, the
        key's fate is reconcile's), the destination by key; in batches. Those looked at a
        second ago or less are not (:data:`~cupid_airflow.core.confirm.MIN_AGE`), unless named
        in ``only``."""
        candidates = self.state["candidates"]
        keys = [k for k in (self.confirmer.due(now) if only is None else only) if k not in skip and k in candidates]
        if not keys:
            return Verdict()
        pair = self.pair
        timing = self.column_time
        by_id = [k for k in keys if candidates[k]["id"] is not None]
        by_key = [k for k in keys if candidates[k]["id"] is None]
        hits: dict[str, tuple[tuple[Any, ...], Any]] = {}  # key -> (its source row, the row's stamp)
        des_rows: list[tuple[Any, ...]] = []
        with ExitStack() as stack:
            source = stack.enter_context(pair.source_table())
            target = stack.enter_context(pair.destination_table())
            ids_of: list[int] = [i for k in by_id if (i := candidates[k]["id"]) is not None]
            for group, ids in ((by_id, ids_of), (by_key, None)):
                if not group:
                    continue
                params = [p for k in group for p in lookup_keys(k)]
                rows, des, values = pair.recheck_rows(source, target, params, stamp=timing is not None, ids=ids)
                des_rows += des
                found = {
                    (_as_int(row[0]) if ids is not None else str(to_text(row[1]))): (row, values[i] if values else None)
                    for i, row in enumerate(rows)
                }
                for key in group:
                    hit = found.get(candidates[key]["id"] if ids is not None else key)
                    if hit is not None and str(to_text(hit[0][1])) == key:  # a row re-keyed is not this key's
                        hits[key] = hit
            # read after the look: ids above it were inserted after the versions it saw
            frontier = self.frontier(source)
        events = {e.get("byValue"): e for e in pair.comparer.compare([row for row, _ in hits.values()], des_rows)}
        now = time.time()
        results = []
        for key in keys:
            if key not in hits:
                results.append(Recheck(key, None, None, None, gone=True))
                continue
            row, value = hits[key]
            results.append(Recheck(key, events.get(key), self._stamp(timing, value, now), _as_int(row[0])))
        verdict = self.confirmer.recheck(results, now, frontier, behind)
        if verdict.gone:
            self.log.info("%d candidates' source rows were deleted or re-keyed meanwhile: a reconcile reports "
                          "their destination rows", verdict.gone)  # fmt: skip
        return verdict

    # ------------------------------------------------------------------ handovers and what did not fit

    def merge(self, runs: Mapping[str, Sequence[Any]], now: float) -> int:
        """Take in what mapped compares of earlier runs handed over (their ``cupid_candidates``
        XComs by run id, one per compare; None: not there): candidates, to be looked at again by
        this scan, and what they saw applied. Returns the candidates taken in; what does not fit
        is kept aside (:meth:`spill`)."""
        taken = 0
        for outputs in runs.values():
            for output in outputs:
                if not isinstance(output, dict):
                    continue
                at = min(now, float(output.get("at") or now))
                self.confirmer.observe(Observed.from_dict(output.get("observed") or {}), at)
                handed: dict[str, Any] = output.get("candidates") or {}
                left = self.confirmer.take(handed)
                taken += len(handed) - len(left)
                self.spill(left)
        return taken

    def spill(self, candidates: Mapping[str, Candidate]) -> None:
        """Keep candidates that do not fit (:data:`~cupid_airflow.core.confirm.MAX_CANDIDATES`)
        aside, in their own Variable, written before the state that counts them: never confirmed
        unlooked at, never lost; taken back as room frees."""
        if not candidates:
            return
        key = confirm_spill_key(self.pair.pair_id)
        kept = self._spilled() if self._spill_held is None else self._spill_held
        kept.update({k: c for k, c in candidates.items() if k not in kept})
        self.variables.set(key, kept)
        if self._spill_after is not None:  # some were taken back: they stay in the Variable until the state is saved
            self._spill_after.update({k: c for k, c in candidates.items() if k not in self._spill_after})
        self.state["spilled"] = len(kept if self._spill_after is None else self._spill_after)
        self.log.warning("%d candidates wait beyond the %d a pair keeps (the destination is far behind, or lost "
                         "much): %d kept aside in Variable %s, looked at as room frees", self.confirmer.waiting,
                         MAX_CANDIDATES, len(kept), key)  # fmt: skip

    def unspill(self) -> bool:
        """Take candidates kept aside back in, as room allows; whether some were (then
        :meth:`save_spilled` writes what is still aside, after the state is saved: a scan killed
        between the two looks at some twice, never at none)."""
        if not self.state["spilled"] or self.confirmer.waiting >= MAX_CANDIDATES:
            return False
        held = self._spilled()
        left = self.confirmer.take(held)
        self._spill_held, self._spill_after = held, dict(left)
        self.state["spilled"] = len(left)
        return True

    def save_spilled(self) -> None:
        if self._spill_after is None:
            return
        key = confirm_spill_key(self.pair.pair_id)
        if self._spill_after:
            self.variables.set(key, self._spill_after)
        else:
            self.variables.delete(key)
        self._spill_held = self._spill_after = None

    def _spilled(self) -> dict[str, Candidate]:
        key = confirm_spill_key(self.pair.pair_id)
        data = self.variables.get(key, None)
        if not isinstance(data, dict):
            return {}
        try:
            return {str(k): read_candidate(c) for k, c in data.items()}
        except (KeyError, TypeError, ValueError) as e:
            self.log.warning(
                "Variable %s is not readable (%s): the candidates kept aside in it are forgotten "
                "until the pair's next safety run or a reconcile finds them",
                key,
                type(e).__name__,
            )
            return {}

    # ------------------------------------------------------------------ the state

    def save(self) -> None:
        self.variables.set(self.key, self.state)

    @property
    def idle(self) -> bool:
        """Nothing waits, nothing is handed over or owed: the state can go (a pair that stopped confirming)."""
        s = self.state
        return not (s["candidates"] or s["pending"] or s["spilled"] or s["outbox"])

    @property
    def lag(self) -> float | None:
        return self.confirmer.lag(time.time())


def handed_over(candidates: Mapping[str, Candidate], observed: Observed) -> dict[str, Any]:
    """What a mapped compare hands the next scan (its XCom ``cupid_candidates``): the candidates it
    kept waiting, compact (a look again makes their events), and what it saw applied."""
    return {"at": time.time(), "candidates": dict(candidates), "observed": observed.as_dict()}


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _instant(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
