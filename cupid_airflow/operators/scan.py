"""The scan tasks of a pair's run: new ids, then updated rows (the planners of
:mod:`cupid_airflow.planning`); a small run finishes here."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias, Context

from cupid_airflow.core.compare import ID_COLUMN
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import CarriedEvents, Event, carried_events, event_types
from cupid_airflow.core.partitions import IdPartition, WindowPartition, read_partition, rows_at_most
from cupid_airflow.names import CUPID_TAG, backlog_alias_name, watch_asset_identity
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.planning import ScanRun
from cupid_airflow.planning.inserts import InsertPlan, InsertPlanner
from cupid_airflow.planning.updates import UpdatePlanner

__all__ = ["ScanInsertOperator", "ScanOperator", "ScanUpdateOperator", "backlog_alias"]

ScanOutput = list[IdPartition | WindowPartition] | list[CarriedEvents]


def backlog_alias(pair_id: str) -> AssetAlias:
    """The scan task's outlet: an alias, so an event (a next run) is emitted only when the scan adds one."""
    return AssetAlias(name=backlog_alias_name(pair_id), group=CUPID_TAG)


class _ScanBase(CupidOperator):
    """What the scan tasks share: the run as the planners see it."""

    def scan_run(self, context: Context) -> ScanRun:
        dag_run = context.get("dag_run")
        return ScanRun(
            run_id=context["run_id"],
            params=context["params"],
            interval_start=context.get("data_interval_start"),
            interval_end=context.get("data_interval_end"),
            backfill=dag_run is not None and str(dag_run.run_type).lower().endswith("backfill"),
            compare_outcomes=lambda run_ids: self.compare_outcomes(context, run_ids),
        )


class ScanOperator(_ScanBase):
    """Claims new ids (``src.insert``: :class:`~cupid_airflow.planning.inserts.InsertPlanner`)
    and finds updated rows (``src.update``: :class:`~cupid_airflow.planning.updates.UpdatePlanner`)
    in one task, and returns their partitions for the mapped ``compare``.

    One task, not one per kind: a run costs a task process (about a second of start-up) per task
    in its path, and a watched pair's run is mostly one new or changed row. For the same reason a
    run whose partitions hold at most ``inlineRows`` rows (an index probe tells, before any row is
    read) compares them and sends their callbacks here, in one pass, and returns nothing: the
    mapped tasks are skipped. Events that pass does not deliver (or does not send in time:
    :data:`~cupid_airflow.callbacks.INLINE_SEND_SECONDS`) go on as
    :class:`~cupid_airflow.core.events.CarriedEvents` through ``compare`` to ``callback``, whose
    retries and alerts take them from there. Claims and windows settle as for any run: its
    ``compare`` ends skipped (nothing left) or successful.

    A retry of this task compares the same ranges again and resends what it found (the same
    event ids): delivery stays at-least-once.

    A watched pair's scan has :func:`backlog_alias` as its outlet. A claim cut short by
    ``maxRowsPerRun`` adds an event of the pair's watch asset through it, so the next run follows
    this one (``max_active_runs=1`` queues it): the watcher fires only when the table changes, and
    a backlog left on a quiet table would otherwise wait for the safety schedule. A run that took
    over ranges of a failed run does not: a lasting failure must not chain failing runs, each
    checking more than the last; the next insert or the safety schedule goes on from there.
    """

    ui_color = "#d9f2e6"

    def run(self, context: Context) -> ScanOutput:
        src = self.config.src
        run = self.scan_run(context)
        inserts = InsertPlan()
        parts: list[IdPartition | WindowPartition] = []
        until = None
        if src.insert:
            inserts = InsertPlanner(self.pair, self.variables, self.log).plan(run)
            parts += inserts.partitions
            self._follow_backlog(context, inserts.backlog_ids)
        if src.update:
            claim = inserts.claim if src.insert and inserts.claim and inserts.claim[0] < inserts.claim[1] else None
            updates = UpdatePlanner(self.pair, self.variables, self.log).plan(run, lambda: claim)
            parts += updates.partitions
            until = updates.until
        where = {"max_id": inserts.max_id, "cursor": inserts.cursor, "until": until}
        position = {k: v for k, v in where.items() if v is not None}
        limit = self.config.inline_rows
        small = False
        if parts and limit:
            with self.pair.source_table() as table:
                small = rows_at_most(table, parts, limit, ID_COLUMN)
            if not small:
                self.log.info("More than inlineRows=%d rows to compare: %d mapped compare task(s)", limit, len(parts))
        if not small:
            self.record(context, "scan", **position)
            return parts
        return self._compare_and_deliver(context, parts, position)

    def _follow_backlog(self, context: Context, backlog_ids: int) -> None:
        alias = backlog_alias(self.pair.pair_id)
        if not backlog_ids or alias not in self.outlets:
            return
        name, uri = watch_asset_identity(self.pair.pair_id)
        asset = Asset(name=name, uri=uri, group=CUPID_TAG)
        context["outlet_events"][alias].add(asset, extra={"backlog_ids": backlog_ids})
        self.log.info("%d source ids above this run's claim (maxRowsPerRun=%d): the next run follows this one",
                      backlog_ids, self.config.max_rows_per_run)  # fmt: skip

    def _compare_and_deliver(
        self, context: Context, parts: list[IdPartition | WindowPartition], position: dict[str, Any]
    ) -> list[CarriedEvents]:
        events: list[Event] = []
        rows = sum(self.pair.compare_partition(read_partition(p), events.extend) for p in parts)
        found = event_types(events)
        missing = found.get(Divergence.MISSING.key, 0)
        self.log.info(
            "Compared %d source rows here (inlineRows=%d): %d missing (type 1), %d different (type 2)",
            rows, self.config.inline_rows, missing, len(events) - missing,
        )  # fmt: skip
        left = self._deliver_inline(events)
        # events the scan delivered count here; the ones it hands on count in the callback's tally
        sent = len(events) - len(left)
        delivered = {"events": sent, "delivered": sent} if sent else {}
        self.record(context, "scan", **position, rows=rows, found=found, **delivered)
        return [carried_events(left)] if left else []

    def _deliver_inline(self, events: list[Event]) -> list[Event]:
        """The events this scan could not deliver itself (all of them with ``callbackQueue``)."""
        if not events:
            return []
        if self.config.callback_queue:  # this worker may have no way to the receivers
            self.log.info("callbackQueue=%s: the callback task sends the %d events", self.config.callback_queue,
                          len(events))  # fmt: skip
            return events
        from cupid_airflow.callbacks import CallbackService

        try:
            left = CallbackService(self.pair, self.log).deliver_once(events)
        except Exception as e:  # the callback's setup (a connection, its extras): the callback task's to report
            # only the type: a driver's message may quote the URL, and the callback task reports it in full
            self.log.warning("Could not send here (%s): the callback task delivers all %d events",
                             type(e).__name__, len(events))  # fmt: skip
            left = events
        if left:
            self.log.warning("%d of %d events not delivered: the callback task retries them", len(left), len(events))
        return left


class ScanInsertOperator(_ScanBase):
    """The scan of new ids alone, for a DAG built by hand (public API): returns the partitions of
    this run's claim for a mapped :class:`~cupid_airflow.operators.compare.CompareOperator`. The
    factory's DAGs run both scans in one :class:`ScanOperator`."""

    ui_color = "#d9f2e6"

    def run(self, context: Context) -> list[IdPartition]:
        return InsertPlanner(self.pair, self.variables, self.log).plan(self.scan_run(context)).partitions


class ScanUpdateOperator(_ScanBase):
    """The scan of updated rows alone, for a DAG built by hand (public API): leaves out the rows
    of the run's insert claim, which a :class:`ScanInsertOperator` before it partitions."""

    ui_color = "#d9ecf2"

    def run(self, context: Context) -> list[WindowPartition]:
        return UpdatePlanner(self.pair, self.variables, self.log).plan(self.scan_run(context)).partitions
