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
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cupid_airflow.core.codec import Store
from cupid_airflow.core.compare import lookup_keys, to_text
from cupid_airflow.core.confirm import (
    CONFIRM_KEY,
    Confirmer,
    ConfirmState,
    Found,
    Observed,
    Recheck,
    Verdict,
    read_confirm_state,
)
from cupid_airflow.core.errors import PermanentError
from cupid_airflow.core.events import Event
from cupid_airflow.names import confirm_state_key

if TYPE_CHECKING:
    from cupid_airflow.core.partitions import ColumnTime
    from cupid_airflow.pair import SyncPair

__all__ = ["CONFIRM_KEY", "Confirmation", "handed_over"]


class Confirmation:
    """The pair's confirmation state and the lookups a task makes for it.

    :param pair: the pair.
    :param variables: where the state lives (the scan writes it; other tasks only read it).
    :param log: the task's logger.
    """

    def __init__(self, pair: SyncPair, variables: Store, log: Any) -> None:
        self.pair = pair
        self.variables = variables
        self.log = log
        self.key = confirm_state_key(pair.pair_id)
        self.state: ConfirmState = read_confirm_state(variables.get(self.key, None), where=f"Variable {self.key}")
        self.confirmer = Confirmer(self.state, pair.config.confirm_seconds)
        self.observed = Observed()  # what this task saw applied, not yet taken into the state
        self.observed_total = Observed()  # all it saw applied (a mapped compare hands it on)
        self.found = 0  # divergences this task found, before confirmation

    @property
    def enabled(self) -> bool:
        return self.pair.config.confirm_seconds > 0

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
            self.log.warning("Confirmation cannot date rows by %s (%s): it waits as for undated rows",
                             self.pair.src.update_column, e)  # fmt: skip
            return None

    # ------------------------------------------------------------------ what a compare saw

    def seen(self, insert: bool) -> Callable[[Sequence[tuple[Any, ...]], list[Event]], list[Found]]:
        """For :meth:`SyncPair.compare_partition`: each batch's rows (with the update column's
        value last) and events in, the events with their rows' stamps out; what compared equal is
        noted as applied (``insert``: the partition holds new ids)."""
        stamped = self.pair.src.update_column is not None
        timing = self.column_time if stamped else None
        version = self.pair.version_mapped
        cap = float(self.pair.config.confirm_seconds)

        def batch(rows: Sequence[tuple[Any, ...]], events: list[Event]) -> list[Found]:
            now = time.time()
            self.found += len(events)
            by_id: dict[str, Event] = {str((e.get("srcColumn") or {}).get("id")): e for e in events}
            found: list[Found] = []
            newest: Any = None
            newest_id: int | None = None
            recent: list[Any] = []
            cutoff = timing.lower(_instant(now - cap)) if timing is not None else None
            for row in rows:
                event = by_id.get(str(to_text(row[0]))) if by_id else None
                value = row[-1] if stamped else None
                if event is not None:
                    stamp = timing.epoch(value) if timing is not None else None
                    found.append(Found(event, stamp, _as_int(row[0])))
                    continue
                if value is not None and (newest is None or value > newest):
                    newest = value
                if insert and (newest_id is None or row[0] > newest_id):
                    newest_id = row[0]
                if cutoff is not None and value is not None and value >= cutoff and len(recent) < 64:
                    recent.append(value)
            if timing is not None and newest is not None:  # new ids are seen for the first time
                self.observed.applied(timing.epoch(newest), None, now, cap, version=version, insert=insert,
                                      first_sight=insert)  # fmt: skip
            for value in recent:
                self.observed.applied(timing.epoch(value) if timing else None, None, now, cap, version=version,
                                      insert=insert, first_sight=True)  # fmt: skip
            if newest_id is not None:
                self.observed.applied(None, _as_int(newest_id), now, cap, version=False, insert=True,
                                      first_sight=False)  # fmt: skip
            return found

        return batch

    # ------------------------------------------------------------------ decisions

    def take_in(self, now: float, observed: Observed | None = None) -> None:
        """What this task (and ``observed``: a mapped compare's) saw applied, into the state."""
        self.confirmer.observe(self.observed, now)
        self.observed_total.merge(self.observed)
        self.observed = Observed()
        if observed is not None:
            self.confirmer.observe(observed, now)

    def add(self, found: Sequence[Found], now: float) -> Verdict:
        self.take_in(now)
        return self.confirmer.add(found, now)

    def recheck(self, now: float, skip: frozenset[str] = frozenset()) -> Verdict:
        """Look at the waiting candidates again (one lookup by key on each side, in batches)."""
        keys = [k for k in self.confirmer.due(now) if k not in skip]
        if not keys:
            return Verdict()
        pair = self.pair
        timing = self.column_time
        params = [p for k in keys for p in lookup_keys(k)]
        with pair.source_table() as source, pair.destination_table() as target:
            src_rows, des_rows, stamps = pair.recheck_rows(source, target, params, stamp=timing is not None)
        events = {e.get("byValue"): e for e in pair.comparer.compare(src_rows, des_rows)}
        by_key: dict[str, tuple[tuple[Any, ...], Any]] = {}
        for i, row in enumerate(src_rows):
            by_key[str(to_text(row[1]))] = (row, stamps[i] if stamps else None)
        results = []
        for key in keys:
            if key not in by_key:
                results.append(Recheck(key, None, None, None, gone=True))
                continue
            row, value = by_key[key]
            stamp = timing.epoch(value) if timing is not None else None
            results.append(Recheck(key, events.get(key), stamp, _as_int(row[0])))
        return self.confirmer.recheck(results, time.time())

    # ------------------------------------------------------------------ the state

    def merge(self, runs: Mapping[str, Sequence[Any]], now: float) -> Verdict:
        """Take in what mapped compares of earlier runs handed over (their ``cupid_candidates``
        XComs, by run id): as candidates found when the compare ran, to be looked at again."""
        verdict = Verdict()
        for outputs in runs.values():
            for output in outputs:
                if not isinstance(output, dict):
                    continue
                at = min(now, float(output.get("at") or now))
                self.confirmer.observe(Observed.from_dict(output.get("observed") or {}), at)
                found = [Found(f["event"], f.get("stamp"), f.get("id")) for f in output.get("found") or []]
                part = self.confirmer.add(found, at, decide=False)  # this scan looks at them again first
                verdict.confirmed += part.confirmed
                verdict.added += part.added
        done = set(runs)
        self.state["pending"] = [p for p in self.state["pending"] if p[0] not in done]
        return verdict

    def save(self) -> None:
        self.variables.set(self.key, self.state)

    @property
    def lag(self) -> float | None:
        return self.confirmer.lag(time.time())


def handed_over(found: Sequence[Found], observed: Observed) -> dict[str, Any]:
    """What a mapped compare hands the next scan (its XCom ``cupid_candidates``)."""
    return {
        "at": time.time(),
        "found": [{"event": f.event, "stamp": f.stamp, "id": f.id} for f in found],
        "observed": observed.as_dict(),
    }


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _instant(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)
