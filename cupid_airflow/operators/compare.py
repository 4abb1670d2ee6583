"""Compares one partition of source rows with the destination; returns the divergent rows as events."""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import Context

from cupid_airflow.confirming import CONFIRM_KEY, Confirmation, handed_over
from cupid_airflow.core.confirm import Found
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import Event, EventChunks, EventSpool, read_carried_events
from cupid_airflow.core.labels import partition_label
from cupid_airflow.core.partitions import Partition, read_partition
from cupid_airflow.operators.base import CupidOperator

__all__ = ["CompareOperator"]


class CompareOperator(CupidOperator):
    """Returns one event per source row of the partition that is missing in the destination
    (type 1) or different there (type 2), in XCom chunks when there are many (an empty
    destination); the streaming compare itself is :meth:`cupid_airflow.pair.SyncPair.compare_partition`.

    A run small enough to compare in its scan task (``inlineRows``) hands over only the events
    its scan did not deliver (:class:`~cupid_airflow.core.events.CarriedEvents`: it could not, or,
    with ``callbackQueue``, did not try): they pass through unchanged, so ``callback`` sends and
    retries them as it does any others.

    :param partition: one partition from a scan task (mapped).
    """

    ui_color = "#f2ecd9"

    def __init__(self, *, partition: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition = partition

    def run(self, context: Context) -> list[Event] | EventChunks:
        label = partition_label(self.partition)
        self.show_as(context, label)
        carried = read_carried_events(self.partition)
        if carried is not None:
            self.log.info("%d events the scan compared but did not deliver: handed to callback", len(carried))
            return carried  # counted by the scan that found them
        part = read_partition(self.partition)
        spool = self.event_spool(context)
        held: dict[str, int] = {}
        if self.config.confirm_seconds:
            rows, held = self._confirming(context, part, spool)
        else:
            rows = self.pair.compare_partition(part, spool.add)
        missing = spool.types.get(Divergence.MISSING.key, 0)
        self.show_as(context, f"{label}: {spool.count:,} found" + (f", {held['candidates']:,} held" if held else ""))
        self.record(context, "compare", rows=rows, found=dict(spool.types), **held)
        self.log.info(
            "Compared %d source rows of %s: %d missing (type 1), %d different (type 2)%s",
            rows, part, missing, spool.count - missing,
            f"; {spool.chunks} XCom chunks of events" if spool.chunks else "",
        )  # fmt: skip
        return spool.finish()

    def _confirming(self, context: Context, part: Partition, spool: EventSpool) -> tuple[int, dict[str, int]]:
        """Compare with confirmation: what a rule already confirms (an old row, a destination that
        moved past it) goes to ``callback``; the other divergences, and what this compare saw
        applied, go to the next scan (XCom ``cupid_candidates``), which keeps them waiting. Decided
        batch by batch against the pair's state as the scan left it (read, never written here)."""
        confirm = Confirmation(self.pair, self.variables, self.log)
        seen = confirm.seen(insert=part["kind"] == "ids")
        held: list[Found] = []

        def decide(found: list[Found]) -> None:
            verdict = confirm.add(found, time.time())
            confirmed = {id(e) for e in verdict.confirmed}
            spool.add(verdict.confirmed)
            held.extend(f for f in found if id(f.event) not in confirmed)

        rows = self.pair.compare_partition(part, decide, seen=seen)
        ti: Any = context.get("ti")
        if held and ti is not None:
            ti.xcom_push(key=CONFIRM_KEY, value=handed_over(held, confirm.observed_total))
        elif ti is not None:  # what it saw applied still tells the next scan where the destination is
            ti.xcom_push(key=CONFIRM_KEY, value=handed_over([], confirm.observed_total))
        return rows, {"candidates": len(held)}
