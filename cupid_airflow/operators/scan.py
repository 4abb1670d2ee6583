"""The one scan task of a pair's run: new ids, then updated rows; a small run finishes here."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias, Context

from cupid_airflow.core.compare import EVENT_MISSING, ID_COLUMN
from cupid_airflow.core.partitions import rows_at_most
from cupid_airflow.core.state import (
    CarriedEvents,
    Event,
    IdPartition,
    WindowPartition,
    carried_events,
    event_types,
    read_partition,
)
from cupid_airflow.operators.scan_insert import InsertScan
from cupid_airflow.operators.scan_update import UpdateScan

__all__ = ["ScanOperator", "backlog_alias", "watch_asset_identity"]

ScanOutput = list[IdPartition | WindowPartition] | list[CarriedEvents]


def watch_asset_identity(pair_id: str) -> tuple[str, str]:
    """Name and URI of a watched pair's asset, whose events start the pair's runs: its watcher's,
    and a scan's that left a backlog."""
    return f"cupid-watch/{pair_id}", f"cupid-watch://{pair_id}/"


def backlog_alias(pair_id: str) -> AssetAlias:
    """The scan task's outlet: an alias, so an event (a next run) is emitted only when the scan adds one."""
    return AssetAlias(name=f"cupid-backlog/{pair_id}", group="cupid")


class ScanOperator(InsertScan, UpdateScan):
    """Claims new ids (``src.insert``: :class:`~cupid_airflow.operators.scan_insert.InsertScan`)
    and finds updated rows (``src.update``: :class:`~cupid_airflow.operators.scan_update.UpdateScan`)
    in one task, and returns their partitions for the mapped ``compare``.

    One task, not one per kind: a run costs a task process (about a second of start-up) per task
    in its path, and a watched pair's run is mostly one new or changed row. For the same reason a
    run whose partitions hold at most ``inlineRows`` rows (an index probe tells, before any row is
    read) compares them and sends their callbacks here, in one pass, and returns nothing: the
    mapped tasks are skipped. Events that pass does not deliver (or does not send in time:
    :data:`~cupid_airflow.operators.callback.INLINE_SEND_SECONDS`) go on as
    :class:`~cupid_airflow.core.state.CarriedEvents` through ``compare`` to ``callback``, whose
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
        parts: list[IdPartition | WindowPartition] = []
        self.update_until = None
        if src.insert:
            parts += self.scan_inserts(context)
            self._follow_backlog(context)
        if src.update:
            parts += self.scan_updates(context)
        limit = self.config.inline_rows
        small = False
        if parts and limit:
            with self.pair.source_table() as table:
                small = rows_at_most(table, parts, limit, ID_COLUMN)
            if not small:
                self.log.info("More than inlineRows=%d rows to compare: %d mapped compare task(s)", limit, len(parts))
        if not small:
            self._record_scan(context)
            return parts
        return self._compare_and_deliver(context, parts)

    def _record_scan(self, context: Context, **figures: Any) -> None:
        where = {"max_id": self.source_max_id, "cursor": self.insert_cursor, "until": self.update_until}
        self.record(context, "scan", **{k: v for k, v in where.items() if v is not None}, **figures)

    def _follow_backlog(self, context: Context) -> None:
        alias = backlog_alias(self.pair.pair_id)
        if not self.backlog_ids or alias not in self.outlets:
            return
        name, uri = watch_asset_identity(self.pair.pair_id)
        asset = Asset(name=name, uri=uri, group="cupid")
        context["outlet_events"][alias].add(asset, extra={"backlog_ids": self.backlog_ids})
        self.log.info("%d source ids above this run's claim (maxRowsPerRun=%d): the next run follows this one",
                      self.backlog_ids, self.config.max_rows_per_run)  # fmt: skip

    def _insert_claim(self, run_id: str) -> list[int] | None:
        claim = self.run_claim  # set by this task's own insert scan: no Variable read
        return claim if self.config.src.insert and claim and claim[0] < claim[1] else None

    def _compare_and_deliver(self, context: Context, parts: list[IdPartition | WindowPartition]) -> list[CarriedEvents]:
        events: list[Event] = []
        rows = sum(self.pair.compare_partition(read_partition(p), events.extend) for p in parts)
        found = event_types(events)
        missing = found.get(str(EVENT_MISSING), 0)
        self.log.info(
            "Compared %d source rows here (inlineRows=%d): %d missing (type 1), %d different (type 2)",
            rows, self.config.inline_rows, missing, len(events) - missing,
        )  # fmt: skip
        left = self._deliver_inline(events)
        # events the scan delivered count here; the ones it hands on count in the callback's tally
        sent = len(events) - len(left)
        self._record_scan(context, rows=rows, found=found, **({"events": sent, "delivered": sent} if sent else {}))
        return [carried_events(left)] if left else []

    def _deliver_inline(self, events: list[Event]) -> list[Event]:
        """The events this scan could not deliver itself (all of them with ``callbackQueue``)."""
        if not events:
            return []
        if self.config.callback_queue:  # this worker may have no way to the receivers
            self.log.info("callbackQueue=%s: the callback task sends the %d events", self.config.callback_queue,
                          len(events))  # fmt: skip
            return events
        from cupid_airflow.operators.callback import deliver_once

        try:
            left = deliver_once(self.pair, events, self.log)
        except Exception as e:  # the callback's setup (a connection, its extras): the callback task's to report
            # only the type: a driver's message may quote the URL, and the callback task reports it in full
            self.log.warning("Could not send here (%s): the callback task delivers all %d events",
                             type(e).__name__, len(events))  # fmt: skip
            left = events
        if left:
            self.log.warning("%d of %d events not delivered: the callback task retries them", len(left), len(events))
        return left
