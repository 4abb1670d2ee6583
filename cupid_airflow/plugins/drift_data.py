"""What the cupid view shows, read from Airflow's metadata database in the api-server: the cupid
DAGs and their tags, their runs of the last days, the tasks' ``cupid_tally`` XComs, and the scan
state Variables. Nothing here opens a user's database: the source's highest id is the one the
last scan recorded.

A few queries per page (ids go in chunks of 2,000: 9 statements at 50 pairs, 17 at 200), at most
:data:`MAX_RUNS` runs per pair; finished runs' sums are kept in the process (:class:`_FinishedRuns`),
so a page reads the tallies of new and running runs only (bench/drift_view.py).
These are the only reads of Airflow's ORM models in cupid, kept in this one module so a change of
Airflow's schema touches one place (the view's tests run against the real api-server).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cupid_airflow.core.codec import StateError, Store
from cupid_airflow.core.drift import RunFigures
from cupid_airflow.core.positions import read_insert_cursor, read_update_mark
from cupid_airflow.core.tally import TALLY_KEY
from cupid_airflow.hooks.variables import VariableSnapshot
from cupid_airflow.names import (
    CONFIG_ERROR_TAG,
    CONFIG_TAG_PREFIX,
    CUPID_TAG,
    DES_TAG_PREFIX,
    RECONCILE_TAG,
    SRC_TAG_PREFIX,
    broken_problem,
    insert_cursor_key,
    reconcile_dag_id,
    update_mark_key,
)

__all__ = [
    "WINDOW",
    "BrokenConfig",
    "DriftPage",
    "PairDrift",
    "RunPoint",
    "load_page",
    "run_records",
]

log = logging.getLogger(__name__)

#: How far back the view looks, and at most how many runs of a pair it draws (and reads the
#: tallies of: a page's cost grows with pairs x MAX_RUNS x tasks per run; bench/drift_view.py).
WINDOW = timedelta(days=7)
MAX_RUNS = 100
_CHUNK = 2000  # ids per IN list: well below every database's limit on parameters
_WAITING = {"running", "queued"}
_TASK_FAILED = {"failed", "upstream_failed", "up_for_retry"}


@dataclass(slots=True)
class RunPoint:
    dag_id: str
    run_id: str
    when: datetime
    state: str
    figures: RunFigures
    problems: list[tuple[str, int]] = field(default_factory=list)  # (task_id, map_index) failed or retrying


@dataclass(slots=True)
class PairDrift:
    """One sync pair as the view shows it."""

    dag_id: str
    config: str
    src: str
    des: str
    paused: bool
    description: str
    runs: list[RunPoint]  # oldest first, within WINDOW
    cursor: int | None = None
    max_id: int | None = None  # as the last scan that read it recorded
    until: datetime | None = None  # update high-water mark
    reconcile_dag_id: str | None = None
    reconcile: RunPoint | None = None

    @property
    def backlog(self) -> int | None:
        if self.max_id is None or self.cursor is None:
            return None
        return max(0, self.max_id - self.cursor)

    @property
    def confirming(self) -> RunFigures | None:
        """The figures of the newest run whose scan said how many candidates wait."""
        return next((r.figures for r in reversed(self.runs) if r.figures.waiting is not None), None)

    def lag_seconds(self, now: datetime) -> float | None:
        return None if self.until is None else max(0.0, (now - self.until).total_seconds())

    @property
    def last_run(self) -> RunPoint | None:
        return self.runs[-1] if self.runs else None

    def totals(self) -> RunFigures:
        total = RunFigures()
        for run in self.runs:
            total.merge(run.figures)
        return total

    def undelivered(self, waiting: bool) -> int:
        """Events the callbacks have not delivered: of runs still going (waiting: retries are
        due), or of runs that ended failed (only clearing the callback sends them)."""
        return sum(
            r.figures.undelivered for r in self.runs if (r.state in _WAITING) == waiting and r.state != "success"
        )

    def drift_reasons(self) -> list[str]:
        """Why the pair is not in sync now, from its latest figures: the last run found
        divergences, callbacks are undelivered, ids wait unclaimed, or the last reconcile found
        drift. Empty: in sync (divergences of older runs were delivered since)."""
        reasons = []
        last = self.last_run
        if last is not None and last.figures.divergences:
            reasons.append(f"the last run found {last.figures.divergences:,}")
        undelivered = self.undelivered(waiting=True) + self.undelivered(waiting=False)
        if undelivered:
            reasons.append(f"{undelivered:,} callbacks undelivered")
        if self.backlog:
            reasons.append(f"{self.backlog:,} ids not yet compared")
        if self.reconcile is not None and self.reconcile.figures.divergences:
            reasons.append(f"the last reconcile found {self.reconcile.figures.divergences:,}")
        return reasons

    def as_dict(self, now: datetime) -> dict[str, Any]:
        last, totals = self.last_run, self.totals()
        return {
            "dag_id": self.dag_id,
            "config": self.config,
            "src": self.src,
            "des": self.des,
            "paused": self.paused,
            "insert_cursor": self.cursor,
            "source_max_id": self.max_id,
            "backlog": self.backlog,
            "update_mark": None if self.until is None else self.until.isoformat(),
            "lag_seconds": self.lag_seconds(now),
            "drifting": self.drift_reasons(),
            "window": totals.as_dict(),
            "confirmation": self._confirmation(totals),
            "callbacks": {
                "delivered": totals.delivered,
                "waiting": self.undelivered(waiting=True),
                "failed": self.undelivered(waiting=False),
            },
            "runs": [_run_dict(r) for r in self.runs],
            "last_run": None if last is None else _run_dict(last),
            "reconcile_dag_id": self.reconcile_dag_id,
            "last_reconcile": None if self.reconcile is None else _run_dict(self.reconcile),
        }

    def _confirmation(self, totals: RunFigures) -> dict[str, Any]:
        last = self.confirming
        return {
            "waiting": None if last is None else last.waiting,
            "hot": None if last is None else last.hot,
            "lag_seconds": None if last is None else last.lag,
            "confirmed": totals.divergences,
            "held": totals.candidates,
            "cleared_in_flight": totals.cleared,
        }


def _run_dict(run: RunPoint) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "when": run.when.isoformat(),
        "state": run.state,
        **run.figures.as_dict(),
        "problems": [{"task_id": t, "map_index": m} for t, m in run.problems],
    }


@dataclass(slots=True)
class BrokenConfig:
    dag_id: str
    config: str
    error: str


@dataclass(slots=True)
class DriftPage:
    pairs: list[PairDrift]
    broken: list[BrokenConfig]
    now: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.now.isoformat(),
            "window_days": WINDOW.days,
            "pairs": [_guarded_dict(p, self.now) for p in self.pairs],
            "broken_configs": [{"dag_id": b.dag_id, "config": b.config, "error": b.error} for b in self.broken],
        }


def _guarded_dict(pair: PairDrift, now: datetime) -> dict[str, Any]:
    """A pair's figures, or an error in their place: one pair never takes the answer down."""
    try:
        return pair.as_dict(now)
    except Exception:
        log.exception("cupid view: cannot show pair %s", pair.dag_id)
        return {"dag_id": pair.dag_id, "error": "this pair's figures cannot be shown: see the api-server log"}


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def run_records(session: Any, run_ids: Sequence[int], dag_ids: Iterable[str]) -> dict[int, list[Any]]:
    """The ``cupid_tally`` records of these runs (DagRun primary keys, of these DAGs), by run, as
    stored: :meth:`RunFigures.of_records` checks each."""
    import json

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    # A mapped task instance a re-run no longer has (a cleared run re-scanned into fewer
    # partitions) is REMOVED, but Airflow keeps its XComs: its tally no longer counts. Looked up
    # on their own (rare, and indexed by DAG and state) rather than joined: a join made each
    # tally query read the whole task_instance table.
    removed: set[tuple[str, str, str, int]] = set()
    for chunk in _chunks(sorted(set(dag_ids))):
        removed.update(
            session.execute(
                select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index).where(
                    TaskInstance.dag_id.in_(chunk), TaskInstance.state == "removed"
                )
            ).all()
        )
    found: dict[int, list[Any]] = defaultdict(list)
    for chunk in _chunks(list(run_ids)):
        rows = session.execute(
            select(
                XComModel.dag_run_id, XComModel.value, XComModel.dag_id, XComModel.run_id,
                XComModel.task_id, XComModel.map_index,
            ).where(XComModel.key == TALLY_KEY, XComModel.dag_run_id.in_(chunk))
        ).all()  # fmt: skip
        for run_pk, value, *key in rows:
            if removed and tuple(key) in removed:
                continue
            if isinstance(value, str):  # the Execution API stores a task's XCom as JSON: a dict, or its text
                with suppress(ValueError):  # not JSON: RunFigures.of_records counts it unreadable
                    value = json.loads(value)
            found[run_pk].append(value)
    return found


#: The REST API's XCom writes, as Airflow's audit log names them (``action_logging``: the
#: endpoint's name, written in the request's own transaction).
XCOM_WRITE_EVENTS = ("create_xcom_entry", "update_xcom_entry", "delete_xcom_entry")
#: How far back before the last look the audit log is read again. Airflow commits the audit row
#: (stamped then) before the endpoint writes the XCom: a page between the two drops the run and
#: reads its old records; the next pages, looking back this far, drop it again and read the new.
_AUDIT_MARGIN = timedelta(minutes=5)


def _edited_runs(session: Any, since: datetime) -> set[tuple[str, str]]:
    """``(dag_id, run_id)`` of the runs whose XComs were written through the REST API since
    ``since``, from Airflow's audit log (indexed by event and time: the few rows since the last
    page). Only that API writes the XComs of a finished run: its tasks' writes end with them."""
    from airflow.models.log import Log
    from sqlalchemy import select

    rows = session.execute(
        select(Log.dag_id, Log.run_id).where(Log.event.in_(XCOM_WRITE_EVENTS), Log.dttm >= since)
    ).all()
    return {(dag_id, run_id) for dag_id, run_id in rows if dag_id and run_id}


class _FinishedRuns:
    """The sums of finished runs in this api-server process, by (run pk, the run row's
    ``updated_at``): a finished run's records change when it is cleared, which writes its row, or
    when one is written through the REST API, which the audit log shows (:func:`_edited_runs`:
    those runs are dropped, whoever's page looks, so a page that cannot see a run never hides its
    edit from one that can). A page then reads the records of new, running and edited runs only
    (200 pairs x 100 runs are 100,000 tallies when nothing is cached). Checking each run's records
    for a change instead (their count and newest timestamp) cost more than the rest of the page:
    300 ms at 200 pairs x 100 runs."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.sums: OrderedDict[tuple[int, Any], tuple[RunFigures, tuple[str, str]]] = OrderedDict()
        self.keys: dict[tuple[str, str], tuple[int, Any]] = {}  # (dag_id, run_id) -> its key in sums
        self.looked: datetime | None = None  # when the audit log was last read
        self.lock = threading.Lock()

    def forget_edited(self, session: Any) -> None:
        """Drop the runs written through the REST API since the last look (less the margin)."""
        now = datetime.now(UTC)
        with self.lock:
            since, cached = self.looked, bool(self.sums)
        edited = _edited_runs(session, since - _AUDIT_MARGIN) if since is not None and cached else set()
        with self.lock:
            for run in edited:
                key = self.keys.pop(run, None)
                if key is not None:
                    self.sums.pop(key, None)
            self.looked = now  # only once they are dropped: a look that failed is made again

    def get(self, key: tuple[int, Any]) -> RunFigures | None:
        with self.lock:
            entry = self.sums.get(key)
            if entry is None:
                return None
            self.sums.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[int, Any], run: tuple[str, str], figures: RunFigures) -> None:
        with self.lock:
            self.sums[key] = (figures, run)
            self.keys[run] = key
            while len(self.sums) > self.limit:
                old, (_, old_run) = self.sums.popitem(last=False)
                if self.keys.get(old_run) == old:
                    del self.keys[old_run]


_FINISHED = _FinishedRuns()


def _sum_tallies(
    session: Any, points: dict[int, RunPoint], versions: dict[int, tuple[int, Any]], dag_ids: list[str]
) -> None:
    """Each run's figures, from the cache for finished runs, from their records otherwise."""
    _FINISHED.forget_edited(session)
    missing = []
    for pk, point in points.items():
        cached = _FINISHED.get(versions[pk])
        if cached is None:
            missing.append(pk)
        else:
            point.figures = cached
    stored = run_records(session, missing, dag_ids) if missing else {}
    for pk in missing:
        point = points[pk]
        point.figures = RunFigures.of_records(stored.get(pk, []))
        if point.state in ("success", "failed") and versions[pk][1] is not None:
            _FINISHED.put(versions[pk], (point.dag_id, point.run_id), point.figures)


def _tag_value(tags: list[str], prefix: str) -> str:
    return next((t.removeprefix(prefix) for t in tags if t.startswith(prefix)), "")


def load_page(session: Any, allowed: set[str] | None = None, now: datetime | None = None) -> DriftPage:
    """Every cupid pair the user may read (``allowed``: dag ids; None: all), with its runs of the
    last :data:`WINDOW`, and every broken config."""
    from airflow.models.dag import DagModel, DagTag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.variable import Variable
    from sqlalchemy import func, select

    now = now or datetime.now(UTC)
    cupid = select(DagTag.dag_id).where(DagTag.name == CUPID_TAG)
    dag_rows = session.execute(
        select(DagModel.dag_id, DagModel.is_paused, DagModel.description).where(
            DagModel.dag_id.in_(cupid), DagModel.is_stale.is_(False)
        )
    ).all()
    tags: dict[str, list[str]] = defaultdict(list)
    for dag_id, name in session.execute(select(DagTag.dag_id, DagTag.name).where(DagTag.dag_id.in_(cupid))).all():
        tags[dag_id].append(name)
    dags = {r.dag_id: r for r in dag_rows if allowed is None or r.dag_id in allowed}

    broken = []
    for dag_id in sorted(d for d in dags if CONFIG_ERROR_TAG in tags[d]):
        config = _tag_value(tags[dag_id], CONFIG_TAG_PREFIX)
        error = broken_problem(dags[dag_id].description or "", config)
        broken.append(BrokenConfig(dag_id, config, error))
    reconcile_ids = {d for d in dags if RECONCILE_TAG in tags[d]}
    pair_ids = sorted(d for d in dags if d not in reconcile_ids and CONFIG_ERROR_TAG not in tags[d])

    runs: dict[str, list[RunPoint]] = defaultdict(list)
    pks: dict[int, RunPoint] = {}
    versions: dict[int, tuple[int, Any]] = {}
    watched = [*pair_ids, *sorted(reconcile_ids)]
    for chunk in _chunks(watched):
        # at most MAX_RUNS per DAG, counted by the database (a 60 s schedule makes 10,000 a week)
        newest = func.row_number().over(partition_by=DagRun.dag_id, order_by=DagRun.run_after.desc())
        ranked = (
            select(
                DagRun.id, DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.run_after, DagRun.updated_at,
                newest.label("rank"),
            )
            .where(DagRun.dag_id.in_(chunk), DagRun.run_after >= now - WINDOW)
            .subquery()
        )  # fmt: skip
        rows = session.execute(
            select(
                ranked.c.id, ranked.c.dag_id, ranked.c.run_id, ranked.c.state, ranked.c.run_after, ranked.c.updated_at
            )
            .where(ranked.c.rank <= MAX_RUNS)
            .order_by(ranked.c.run_after.desc())
        ).all()
        for pk, dag_id, run_id, state, run_after, updated_at in rows:
            point = RunPoint(dag_id, run_id, run_after, str(state or "").lower(), RunFigures())
            runs[dag_id].append(point)
            pks[pk] = point
            versions[pk] = (pk, updated_at)
    _sum_tallies(session, pks, versions, watched)
    for dag_runs in runs.values():
        dag_runs.reverse()

    last = {dag_id: dag_runs[-1] for dag_id, dag_runs in runs.items() if dag_runs}
    for chunk in _chunks(sorted(last)):
        rows = session.execute(
            select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index)
            .where(TaskInstance.dag_id.in_(chunk), TaskInstance.state.in_(sorted(_TASK_FAILED)))
            .where(TaskInstance.run_id.in_([last[d].run_id for d in chunk]))
        ).all()
        for dag_id, run_id, task_id, map_index in rows:
            if last[dag_id].run_id == run_id:
                last[dag_id].problems.append((task_id, map_index))

    keys = {insert_cursor_key(d): d for d in pair_ids} | {update_mark_key(d): d for d in pair_ids}
    variables: dict[str, str | None] = {}
    for chunk in _chunks(sorted(keys)):
        for var in session.scalars(select(Variable).where(Variable.key.in_(chunk))):
            variables[var.key] = var.val  # decrypted
    snapshot = VariableSnapshot(variables)

    pairs: list[PairDrift] = []
    for dag_id in pair_ids:
        dag_tags = tags[dag_id]
        pair = PairDrift(
            dag_id=dag_id,
            config=_tag_value(dag_tags, CONFIG_TAG_PREFIX),
            src=_tag_value(dag_tags, SRC_TAG_PREFIX),
            des=_tag_value(dag_tags, DES_TAG_PREFIX),
            paused=bool(dags[dag_id].is_paused),
            description=dags[dag_id].description or "",
            runs=runs.get(dag_id, []),
        )
        pair.cursor, pair.until = _scan_position(snapshot, dag_id)
        pair.max_id = next((r.figures.max_id for r in reversed(pair.runs) if r.figures.max_id is not None), None)
        reconcile_id = reconcile_dag_id(dag_id)
        if reconcile_id in reconcile_ids:
            pair.reconcile_dag_id = reconcile_id
            done = [r for r in runs.get(reconcile_id, []) if r.figures.tasks]
            pair.reconcile = done[-1] if done else None
        pairs.append(pair)
    return DriftPage(pairs, broken, now)


def _scan_position(store: Store, dag_id: str) -> tuple[int | None, datetime | None]:
    """The insert cursor and the update high-water mark, read as the scan reads them; a Variable
    that does not parse shows as unknown here (the pair's next scan fails and says why)."""
    try:
        cursor = read_insert_cursor(store, dag_id)["cursor"]
    except StateError:
        cursor = None
    try:
        until = read_update_mark(store, dag_id)
    except StateError:
        until = None
    return cursor, until
