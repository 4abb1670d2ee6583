"""Claims the next range of new source ids and cuts it into partitions for the mapped compare."""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cupid_airflow.core.claims import GAP_LIMIT, cap_gaps, settle_gaps, start_id_limit, take_over
from cupid_airflow.core.codec import Store
from cupid_airflow.core.compare import ID_COLUMN
from cupid_airflow.core.partitions import IdPartition, id_partitions, merge_to_limit
from cupid_airflow.core.positions import InsertCursor, read_insert_cursor, write_insert_cursor
from cupid_airflow.dialects import permanent_reason
from cupid_airflow.exceptions import CupidFailure
from cupid_airflow.names import insert_cursor_key
from cupid_airflow.planning import ScanRun

if TYPE_CHECKING:  # the SQL hooks load when a scan opens its table: a callback task never needs them
    from cupid_airflow.hooks.table import Table
    from cupid_airflow.pair import SyncPair

__all__ = ["KEEP_CLAIMS", "InsertPlan", "InsertPlanner"]

#: Claims remembered per DAG, so a retried scan of a recent run gets its range back.
KEEP_CLAIMS = 50


@dataclass
class InsertPlan:
    """This run's share of new ids: its partitions, and where the ids stand."""

    partitions: list[IdPartition] = field(default_factory=list)
    claim: list[int] | None = None  # [after, upto]: this run's own claim, when it has one
    max_id: int | None = None  # the source's highest id, when it was read
    cursor: int | None = None  # the insert cursor after the claim
    #: Source ids above the claim (beyond ``maxRowsPerRun``) that the next run should follow
    #: with; 0 when this run also checks ranges it took over from a failed run.
    backlog_ids: int = 0


class InsertPlanner:
    """Claims ``(cursor, upto]`` of the source's ids and returns it as partitions.

    The cursor (:class:`~cupid_airflow.core.positions.InsertCursor`: the last claimed id and the
    recent claims by run id) lives in the Airflow Variable ``cupid.<dag_id>.insert_cursor``: a
    retried scan of the same run gets the same range back, and runs never overlap because the scan
    tasks of a DAG run one at a time (``max_active_tis_per_dag=1``). A claim holds at most
    ``maxRowsPerRun`` rows, so a backlog drains over several runs. A claimed range stays *open*
    until every compare of its run succeeded; the next run checks the open ranges of runs that
    failed before claiming new ids (:mod:`cupid_airflow.core.claims`), so a failed run loses nothing.

    Run parameters (``airflow dags trigger --conf``): ``start_id`` restarts the cursor there, like
    cupid's ``-s``; ``start_id`` with ``end_id`` re-checks that range (up to the source's highest
    id) and leaves the cursor alone. Anyone allowed to trigger a run can set these, so neither may
    switch checking off: a ``start_id`` that would move the cursor forward
    (:func:`~cupid_airflow.core.claims.start_id_limit`) fails the run. Going back is always allowed.
    """

    def __init__(self, pair: SyncPair, variables: Store, log: Any) -> None:
        self.pair = pair
        self.config = pair.config
        self.variables = variables
        self.log = log

    def plan(self, run: ScanRun) -> InsertPlan:
        plan = InsertPlan()
        start_id, end_id = run.params.get("start_id"), run.params.get("end_id")
        with self.pair.source_table() as table:
            if end_id is not None and (start_id is None or end_id < start_id):
                raise CupidFailure(f"end_id={end_id} needs a start_id <= end_id; got start_id={start_id}")
            if start_id is not None:
                max_id = self._max_id(table)
                if end_id is None:
                    self._check_start_id(start_id, max_id)
                elif start_id > (max_id or 0):
                    raise CupidFailure(
                        f"run params start_id={start_id}, end_id={end_id}: {self.pair.src.table}'s highest id is "
                        f"{max_id}, so there is nothing to re-check"
                    )
                if end_id is not None:
                    upto = min(end_id, max_id or 0)
                    self.log.info("Re-checking ids %s..%s (the highest id is %s); the insert cursor is not moved",
                                  start_id, upto, max_id)  # fmt: skip
                    plan.partitions = self._partitions(table, start_id - 1, upto)
                    return plan
            ranges = self._claim_ids(table, run, start_id, plan)
            parts = [p for after, upto in ranges for p in self._partitions(table, after, upto)]
            plan.partitions = merge_to_limit(parts)
            return plan

    def _claim_ids(self, table: Table, run: ScanRun, start_id: int | None, plan: InsertPlan) -> list[list[int]]:
        """This run's ranges: the open ranges it took over from failed runs, then its new claim."""
        dag_id, run_id = self.pair.pair_id, run.run_id
        state = read_insert_cursor(self.variables, dag_id)
        unchanged = copy.deepcopy(state)
        if run_id in state["claims"]:
            after, upto = plan.claim = state["claims"][run_id]
            self.log.info("Run %s already claimed ids (%s, %s]: reusing that claim", run_id, after, upto)
            ranges = state["open"].get(run_id) or [[after, upto]]
            # Only a run that checks nothing but its own claim asks for the next (see below).
            plan.cursor = state["cursor"]
            plan.max_id = self._max_id(table)  # for the tally: the backlog as of this try
            if ranges == [[after, upto]] and state["cursor"] is not None:
                plan.backlog_ids = max(0, (plan.max_id or 0) - state["cursor"])
            return ranges
        takeover = take_over(state["open"], run_id, run.compare_outcomes(list(state["open"])))
        for entry in takeover.inherited:
            self.log.warning("Ids (%s, %s] were claimed by a run whose compares did not all succeed: "
                             "checking them again", *entry)  # fmt: skip
        state["open"] = takeover.open
        if start_id is not None:
            after = start_id - 1
            self.log.info("start_id=%s: the insert cursor restarts at %s", start_id, after)
        else:
            after = state["cursor"] if state["cursor"] is not None else self.config.src.start_id - 1
        max_id = self._max_id(table)
        if start_id is None and state["cursor"] is not None and (max_id or 0) < state["cursor"]:
            raise CupidFailure(
                f"Variable {insert_cursor_key(dag_id)} says ids up to {state['cursor']} were checked, but "
                f"{self.pair.src.table}'s highest id is {max_id}: rows at the top were deleted, the table was "
                "emptied, or a server restart reset its AUTO_INCREMENT (then new rows reuse ids at or below the "
                "cursor and would never be compared). Trigger a run with "
                f"--conf '{{\"start_id\": {(max_id or 0) + 1}}}' to go on from the table's end (or a lower "
                "start_id to re-check), or delete the Variable to start again at src.startId"
            )
        if max_id is None or max_id <= after:
            upto = after
        else:
            bound = table.nth_after(ID_COLUMN, after, None, self.config.max_rows_per_run - 1)
            upto = int(max_id) if bound is None else min(int(bound), int(max_id))
        if after < upto:  # an empty claim is not kept: a retry may as well claim what came since
            state["claims"][run_id] = plan.claim = [after, upto]
            state["claims"] = dict(list(state["claims"].items())[-KEEP_CLAIMS:])
        state["cursor"] = plan.cursor = upto
        plan.max_id = max_id
        late = self._watch_gaps(table, state, after, upto)
        for entry in [*late, [after, upto]] if after < upto else late:
            state["open"].setdefault(run_id, []).append(entry)
        if state != unchanged:  # an idle run writes nothing (a Variable write is an Execution API call)
            write_insert_cursor(self.variables, dag_id, state)
        # A run that took over a failed run's ranges does not queue the next itself: were the
        # failure to last, each run would take over more and fail again, back to back.
        plan.backlog_ids = 0 if takeover.inherited else max(0, (max_id or 0) - upto)
        self.log.info("Claimed ids (%s, %s] (source max id %s); cursor now %s", after, upto, max_id, upto)
        return state["open"].get(run_id, [])

    def _check_start_id(self, start_id: int, max_id: int | None) -> None:
        cursor = read_insert_cursor(self.variables, self.pair.pair_id)["cursor"]
        limit = start_id_limit(cursor, self.config.src.start_id - 1, max_id)
        if start_id > limit:
            at = f"the insert cursor is at {cursor}" if cursor is not None else "no run has claimed ids yet"
            raise CupidFailure(
                f"run param start_id={start_id} would skip ids nobody checked: {at} and {self.pair.src.table}'s "
                f"highest id is {max_id}, so start_id may be at most {limit} (lower re-checks from there). To skip "
                f"ids on purpose, set src.startId before the first run or edit the Variable "
                f"{insert_cursor_key(self.pair.pair_id)}"
            )

    def _max_id(self, table: Table) -> int | None:
        try:
            value = table.max_id()
        except Exception as e:
            if permanent_reason(e) is not None and re.search(rf"\b{ID_COLUMN}\b", str(e)):
                raise CupidFailure(
                    f"{self.pair.src.table} has no `{ID_COLUMN}` column: cupid finds new rows by an integer "
                    "auto-increment id, as cupid-go does; add one, or set src.insert to false and watch the "
                    "table by src.updateColumn only"
                ) from e
            raise
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | Decimal) or value != int(value):
            raise CupidFailure(
                f"{self.pair.src.table}.{ID_COLUMN} holds {type(value).__name__} values ({value!r}): cupid finds "
                "new rows by an integer auto-increment id; set src.insert to false to watch the table by "
                "src.updateColumn only"
            )
        return int(value)

    def _watch_gaps(self, table: Table, state: InsertCursor, after: int, upto: int) -> list[list[int]]:
        """Late commits: an id is allocated when its INSERT runs, so a transaction that commits
        after a higher id was claimed leaves a gap in the claim that fills later. Gaps are watched
        for ``insertSettleSeconds``; the ranges where rows appeared are returned for comparing."""
        settle = self.config.src.insert_settle_seconds
        if not settle:
            state["gaps"] = []
            return []
        now = time.time()
        ranges = [[int(lo), int(hi)] for lo, hi, _ in state["gaps"]]
        present = table.ids_in_ranges(ranges, limit=100_000) if ranges else []
        late, watched, expired = settle_gaps(state["gaps"], present, now, settle)
        for lo, hi in late:
            self.log.warning("Ids committed late appeared in (%s, %s]: comparing them", lo, hi)
        if after < upto:
            watched += [[lo, hi, now] for lo, hi in table.id_gaps(after, upto, GAP_LIMIT + 1)]
        state["gaps"], dropped = cap_gaps(watched)
        if dropped:
            self.log.warning("More than %d id gaps: the %d lowest are not watched for late commits "
                             "(reconcile or the update scan catch those rows)", GAP_LIMIT, dropped)  # fmt: skip
        if state["gaps"] or expired:
            self.log.info("Watching %d id gap(s) for late commits; %d settled after %d s",
                          len(state["gaps"]), expired, settle)  # fmt: skip
        return late

    def _partitions(self, table: Table, after: int, upto: int) -> list[IdPartition]:
        chunk = self.config.chunk_size
        parts = id_partitions(table, after, upto, chunk, ID_COLUMN)
        self.log.info("%d partition(s) of about %d rows for ids (%s, %s]", len(parts), chunk, after, upto)
        return parts
