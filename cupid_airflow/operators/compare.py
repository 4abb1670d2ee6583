"""Compares one partition of source rows with the destination; returns the divergent rows as events."""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import Context

from cupid_airflow.confirming import CONFIRM_KEY, Confirmation, handed_over
from cupid_airflow.core.confirm import Candidate, Found
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import Event, EventChunks, EventSpool, read_carried_events
from cupid_airflow.core.labels import partition_label
from cupid_airflow.core.partitions import Partition, read_partition
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.run_params import asks_again

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
        moved past it) goes to ``callback``; the other new divergences, and what this compare saw
        applied, go to the next scan (XCom ``cupid_candidates``), which keeps them waiting. Decided
        batch by batch against the pair's state as the scan left it (read, never written here);
        a key already waiting there is the scan's to look at again, never decided here."""
        again = asks_again(context["params"], getattr(context.get("dag_run"), "run_type", None))
        confirm = Confirmation(self.pair, self.variables, self.log, context["run_id"], again=again)
        waiting_before = set(confirm.state["candidates"])
        spilled: dict[str, Candidate] = {}
        known, repeated = 0, 0

        def decide(found: list[Found]) -> None:
            nonlocal known, repeated
            new = [f for f in found if f.event.get("byValue") not in waiting_before]
            known += len(found) - len(new)
            verdict = confirm.add(new, time.time())
            repeated += verdict.repeated
            spool.add(verdict.confirmed)
            spilled.update(verdict.spilled)

        rows = self.pair.compare_partition(part, decide, seen=confirm.seen(ids=part["kind"] == "ids"))
        confirm.take_in(time.time())
        confirm.warn_clock()
        handed = {k: c for k, c in confirm.state["candidates"].items() if k not in waiting_before} | spilled
        if handed:
            frontier = confirm.frontier()  # read after the compare: ids above it were inserted after
            for c in handed.values():
                if c["frontier"] is None:
                    c["frontier"] = frontier
        ti: Any = context.get("ti")
        if ti is not None:  # also with no candidate: what it saw applied tells the scan where the destination is
            ti.xcom_push(key=CONFIRM_KEY, value=handed_over(handed, confirm.observed_total))
        if repeated:
            self.log.info("%d divergences found again exactly as they were confirmed lately: not called back again",
                          repeated)  # fmt: skip
        if known:
            self.log.info("%d divergences found here already wait as candidates: the next scan looks at them", known)
        return rows, {"candidates": len(handed)}
