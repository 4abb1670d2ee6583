"""Finds the source rows whose update column lies in this run's window, as partitions for compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cupid_airflow.core.claims import take_over
from cupid_airflow.core.codec import Store
from cupid_airflow.core.partitions import WindowPartition, merge_to_limit, window_partitions
from cupid_airflow.core.positions import UpdateMark, read_insert_cursor, read_update_state, write_update_state
from cupid_airflow.exceptions import CupidFailure
from cupid_airflow.planning import ScanRun

if TYPE_CHECKING:
    from cupid_airflow.pair import SyncPair

__all__ = ["UpdatePlan", "UpdatePlanner"]


@dataclass
class UpdatePlan:
    """This run's update windows as partitions, and where the high-water mark moved."""

    partitions: list[WindowPartition] = field(default_factory=list)
    until: str | None = None  # where the window ended (ISO 8601, UTC), when this run moved the mark


def _instant(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise CupidFailure(f"{name}={value!r} is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class UpdatePlanner:
    """Partitions of the rows whose ``updateColumn`` lies in the run's window.

    The window is the run's data interval, reaching back ``updateScanSecond`` before its start so
    a row committed late is still seen. Scheduled and manual runs also reach back to where the
    previous one ended (the :class:`~cupid_airflow.core.positions.UpdateMark` in the Variable
    ``cupid.<dag_id>.update_hwm``), so a scheduler outage loses nothing even without catchup;
    ``@continuous`` runs, which have no interval, use the mark alone. Backfill runs check exactly
    their interval. Run parameters ``since``/``until`` (ISO date-times) re-check any window. A
    window stays open until every compare of its run succeeded, and the next run scans the open
    windows of failed runs again (:mod:`cupid_airflow.core.claims`).

    Window bounds are converted to ``src.timezone`` and written as the column stores time
    (:meth:`cupid_airflow.pair.SyncPair.column_time`).
    """

    def __init__(self, pair: SyncPair, variables: Store, log: Any) -> None:
        self.pair = pair
        self.config = pair.config
        self.variables = variables
        self.log = log

    def plan(self, run: ScanRun, insert_claim: Callable[[], list[int] | None] | None = None) -> UpdatePlan:
        """The run's windows as partitions. Rows of this run's insert claim are left out of them
        (its id partitions compare those): ``insert_claim`` gives it, asked only when there are
        partitions (default: the claim the insert cursor keeps for the run)."""
        pair = self.pair
        assert pair.src.update_column is not None
        state = read_update_state(self.variables, pair.pair_id)
        mark = None if state["until"] is None else datetime.fromisoformat(state["until"])
        since, until, moves_mark = self._window(run, mark)
        windows = self._claim_windows(run, state, since, until) if moves_mark else [(since, until)]
        plan = UpdatePlan(until=until.isoformat() if moves_mark else None)
        parts: list[WindowPartition] = []
        with pair.source_table() as table:
            writer = pair.column_time(table)
            if writer is None:
                self.log.info("%s has no rows with %s set: nothing to scan", pair.src.table, pair.src.update_column)
                windows = []
            for low_at, high_at in windows:
                assert writer is not None
                low, high = writer.window(low_at, high_at)
                self.log.info(
                    "Window %s .. %s (UTC) is %r .. %r in %s (%s column)",
                    low_at.isoformat(), high_at.isoformat(), low, high, pair.src.timezone, writer.vtype,
                )  # fmt: skip
                column, chunk = pair.src.update_column, self.config.chunk_size
                parts += window_partitions(table, column, writer.vtype, low, high, chunk)
        claim = (insert_claim or (lambda: self.stored_claim(run.run_id)))() if parts else None  # a read: if needed
        if claim is not None:
            for part in parts:  # the insert scan's partitions of this run already compare these rows
                part["exclude_ids"] = claim
        self.log.info("%d partition(s)", len(parts))
        plan.partitions = merge_to_limit(parts)
        return plan

    def stored_claim(self, run_id: str) -> list[int] | None:
        """The insert claim of ``run_id`` as the insert cursor keeps it."""
        if not self.config.src.insert:
            return None
        claim = read_insert_cursor(self.variables, self.pair.pair_id)["claims"].get(run_id)
        return claim if claim and claim[0] < claim[1] else None

    def _claim_windows(
        self, run: ScanRun, state: UpdateMark, since: datetime, until: datetime
    ) -> list[tuple[datetime, datetime]]:
        """This run's windows: those it took over from runs whose compares did not all succeed,
        then its own; the high-water mark moves to ``until``."""
        dag_id, run_id = self.pair.pair_id, run.run_id
        takeover = take_over(state["open"], run_id, run.compare_outcomes(list(state["open"])))
        for entry in takeover.inherited:
            self.log.warning("The window %s .. %s was scanned by a run whose compares did not all succeed: "
                             "checking it again", *entry)  # fmt: skip
        mine = takeover.open.setdefault(run_id, [])
        if [since.isoformat(), until.isoformat()] not in mine:
            mine.append([since.isoformat(), until.isoformat()])
        state["open"] = takeover.open
        current = state["until"]
        if current is None or datetime.fromisoformat(current) < until:
            state["until"] = until.isoformat()
        write_update_state(self.variables, dag_id, state)
        return [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in mine]

    def _window(self, run: ScanRun, mark: datetime | None = None) -> tuple[datetime, datetime, bool]:
        """(since, until, whether this run moves the high-water mark), given where the last one ended."""
        params = run.params
        back = timedelta(seconds=self.config.src.update_scan_second)
        if params.get("since") is not None or params.get("until") is not None:
            if params.get("since") is None or params.get("until") is None:
                raise CupidFailure("give both 'since' and 'until' to re-check a window")
            since, until = _instant(params["since"], "since"), _instant(params["until"], "until")
            if until <= since:
                raise CupidFailure(f"until ({until}) must be after since ({since})")
            return since, until, False
        start, end = run.interval_start, run.interval_end
        if run.backfill and start is not None and end is not None:
            return start - back, end, False
        if start is None or end is None or end <= start:  # @continuous, or a run without an interval
            end = datetime.now(UTC)
            start = mark or end - timedelta(seconds=max(60, self.config.src.update_interval_millisecond / 1000))
        elif mark is not None and mark < start:
            self.log.info("The previous window ended at %s: reaching back to it", mark.isoformat())
            start = mark
        return start - back, end, True
