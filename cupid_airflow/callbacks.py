"""The delivery service: a pair's events to its callback receiver, as the scan (a small run's
one pass, bounded in time) and the callback task (a resumable pass) both deliver them.

The policy of one pass (concurrency, what an answer means, Retry-After, the circuit breaker) is
:mod:`cupid_airflow.core.delivery`'s, and which events earlier tries delivered is
:mod:`cupid_airflow.core.delivered`'s; this module binds them to the pair's receiver
(:class:`~cupid_airflow.hooks.callback.CallbackHook`) and logs what happened. The operators keep
the Airflow part: where the events and the bitmap are stored, the task's outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cupid_airflow import metrics
from cupid_airflow.config import redact_url
from cupid_airflow.core.delivered import DeliveredBits
from cupid_airflow.core.delivery import Delivery, DeliveryReport, deliver_all
from cupid_airflow.core.events import Event

if TYPE_CHECKING:
    from cupid_airflow.hooks.callback import CallbackHook
    from cupid_airflow.pair import SyncPair

__all__ = ["INLINE_SEND_SECONDS", "SAVE_EVERY_SECONDS", "CallbackService"]

#: Persist delivered ids at least this often (seconds) while delivering; a killed worker resends
#: at most what it delivered since the last save.
SAVE_EVERY_SECONDS = 1.0
#: How long a scan task's inline pass (:meth:`CallbackService.deliver_once`) starts deliveries;
#: what it has not sent by then goes on to the callback task. A slow or throttling receiver must
#: not keep the scan (and its database pool slot) sending until its time limit: a try stopped
#: there records nothing, so its retries would compare and send everything again and never hand
#: the events on. At most this, plus one event's own attempts (its request timeouts and short
#: Retry-After waits).
INLINE_SEND_SECONDS = 60.0


class CallbackService:
    """Delivers events of ``pair`` to its destination's callback, logging to ``log``."""

    def __init__(self, pair: SyncPair, log: Any) -> None:
        self.pair = pair
        self.log = log

    @cached_property
    def hook(self) -> CallbackHook:
        """The destination's receiver. Imported here: aiohttp and the http provider cost a task
        process a good part of a CPU-second, and only a task that sends anything needs them."""
        from cupid_airflow.hooks.callback import CallbackHook

        des = self.pair.des
        notification = des.callback_notification
        return CallbackHook(
            url=des.callback_url,
            http_conn_id=des.http_conn_id,
            secret=notification.secret if notification else None,
            concurrency=self.pair.config.worker_number,
            timeout=float(notification.timeout_second) if notification else 3.0,
        )

    async def send(
        self,
        events: Iterable[Event],
        pending: int,
        on_outcome: Callable[[Event, Delivery], None] | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> tuple[DeliveryReport, str]:
        """One delivery pass of ``events`` (short Retry-Afters waited out, no other retry: that is
        the caller's), and the URL they went to (with its secrets: redact it)."""
        hook = self.hook
        async with hook.sender() as (send, url):
            self.log.info(
                "Delivering %d events to %s, %d at a time%s",
                pending, redact_url(url), hook.concurrency, " (signed)" if hook.secret else "",
            )  # fmt: skip
            report = await deliver_all(events, send, hook.concurrency, on_outcome=on_outcome,
                                       checkpoint=checkpoint, checkpoint_every=SAVE_EVERY_SECONDS)  # fmt: skip
        if report.receiver_down:
            self.log.error("Connection failures in a row: the rest was left for the next try")
        return report, url

    def deliver_resuming(
        self, chunks: Iterator[list[Event]], bits: DeliveredBits, pending: int, save: Callable[[], None] | None
    ) -> tuple[DeliveryReport, str]:
        """Deliver the events of ``chunks`` that ``bits`` does not mark delivered, marking each as
        it is delivered; ``save`` (the bitmap's) at most every :data:`SAVE_EVERY_SECONDS`."""
        positions: dict[str, int] = {}  # events in flight -> their place in the list

        def undelivered() -> Iterator[Event]:
            offset = 0
            for chunk in chunks:
                for i, event in enumerate(chunk):
                    if not bits.done(offset + i, event):
                        positions[event["eventId"]] = offset + i
                        yield event
                offset += len(chunk)

        def on_outcome(event: Event, result: Delivery) -> None:
            position = positions.pop(event["eventId"])
            if result.outcome == "delivered":
                bits.mark(position)

        return asyncio.run(self.send(undelivered(), pending, on_outcome, save))

    def deliver_once(self, events: list[Event]) -> list[Event]:
        """Deliver ``events`` in one pass, starting deliveries for at most
        :data:`INLINE_SEND_SECONDS` from the first; the ones not delivered (failed, refused or
        not sent in time), in order."""
        outcomes: dict[str, bool] = {}
        started = 0

        def in_time() -> Iterator[Event]:
            nonlocal started
            deadline = time.monotonic() + INLINE_SEND_SECONDS  # from the first send: the first is always tried
            for event in events:
                if started and time.monotonic() >= deadline:
                    return
                started += 1
                yield event

        def on_outcome(event: Event, result: Delivery) -> None:
            outcomes[event["eventId"]] = result.outcome == "delivered"

        report, url = asyncio.run(self.send(in_time(), len(events), on_outcome))
        metrics.delivery(self.pair.pair_id, "scan", report, final=False)  # the callback task retries the rest
        self.log.info("Delivered %d of %d events to %s", report.delivered, len(events), redact_url(url))
        if started < len(events):
            self.log.warning("%d events not sent within %g s: left to the callback task", len(events) - started,
                             INLINE_SEND_SECONDS)  # fmt: skip
        self.log_problems(report)
        return [e for e in events if not outcomes.get(e["eventId"], False)]

    def log_problems(self, report: DeliveryReport) -> None:
        """The first few undelivered events, by id and key (never their columns' values)."""
        for event, result in report.problems:
            self.log.error("Event %s (%s = %s) not delivered: %s", event["eventId"], self.pair.src.by_column,
                           event.get("byValue"), result.detail)  # fmt: skip
