"""POSTs compare's events to the destination's callback: at-least-once, resumable, never dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from cupid_airflow import metrics
from cupid_airflow.config import redact_url
from cupid_airflow.core.delivery import Delivery, DeliveryReport, deliver_all
from cupid_airflow.core.state import (
    DeliveredBits,
    Event,
    EventChunks,
    EventDigest,
    StateError,
    Store,
    clear_delivered,
    event_chunk_key,
    read_event_output,
)
from cupid_airflow.exceptions import CallbackDeliveryError, ReceiverGoneError
from cupid_airflow.operators.base import CupidOperator

if TYPE_CHECKING:
    from cupid_airflow.pair import SyncPair

__all__ = ["CallbackOperator", "deliver_once", "send_events"]

#: Persist delivered ids at least this often (seconds) while delivering; a killed worker resends
#: at most what it delivered since the last save.
SAVE_EVERY_SECONDS = 1.0
#: How long a scan task's inline pass (:func:`deliver_once`) starts deliveries; what it has not
#: sent by then goes on to the callback task. A slow or throttling receiver must not keep the scan
#: (and its database pool slot) sending until its time limit: a try stopped there records nothing,
#: so its retries would compare and send everything again and never hand the events on. At most
#: this, plus one event's own attempts (its request timeouts and short Retry-After waits).
INLINE_SEND_SECONDS = 60.0


class CallbackOperator(CupidOperator):
    """Delivers one compare task's events to the destination's callback.

    * ``POST`` with cupid's JSON body, ``Content-Type: application/json;charset=UTF-8``; success is
      a 2xx answer to that POST. A redirect is not followed (the connection extra
      ``allow_redirects`` allows same-host 307/308 only), so rows and signatures never go to a
      host nobody configured. Each request carries the event's stable id (``webhook-id``) and, with a secret,
      Standard Webhooks signature headers. ``workerNumber`` requests are in flight at once over a
      pooled keep-alive session (:func:`cupid_airflow.core.delivery.deliver_all`).
    * A 429/503 with a short ``Retry-After`` is waited out and re-sent; other failures fail the
      task, whose retries (``failureJobRetrySecond``, doubling up to 10 minutes) send the events
      that are still undelivered. Ids of delivered events are kept in the task instance's state
      store, so a retry, or a try after the worker was killed, does not resend them (except the
      last second's worth of a killed worker: delivery is at-least-once, duplicates keep their id).
    * A 410 Gone fails the task for good: the receiver said it will never take these events.
    * The events stay in XCom: clearing the task redelivers whatever was not delivered. Past
      10,000 they come in XCom chunks and are read and sent a chunk at a time, so the task's
      memory does not grow with their number.

    :param events: the events of one compare task (mapped), or where its chunks are.
    """

    ui_color = "#f2d9d9"

    def __init__(self, *, events: list[dict[str, Any]] | dict[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    def run(self, context: Context) -> dict[str, int]:
        output = read_event_output(self.events)
        if isinstance(output, list):
            digest, count = EventDigest.of(output), len(output)
        else:
            digest, count = output["digest"], output["count"]
        store: Store | None = context.get("task_state_store")
        bits = DeliveredBits.read(store, digest, count)
        already = bits.delivered()
        self.show_as(context, f"{count:,} events")
        if already:
            self.log.info("%d of %d events were delivered by an earlier try: not resent", already, count)
        if already == count:
            self.show_as(context, f"{count:,} events, {count:,} delivered")
            self.log.info("Nothing to deliver")
            if store is not None and already:
                clear_delivered(store)
            self.record(context, "callback", events=count, delivered=already, failed=0)
            return {"events": count, "delivered": already, "sent": 0}

        # recorded before sending too: a try that dies mid-way (killed, timed out) leaves its
        # events counted as undelivered, not gone (Airflow clears a task's XComs at each new try)
        self.record(context, "callback", events=count, delivered=already, failed=count - already)
        report, url = asyncio.run(self._deliver(self._events(context, output), bits, store, count - already))
        shown = redact_url(url)
        pending = count - already
        retry = getattr(context.get("ti"), "try_number", 1) > 1  # it sends again what earlier tries did not deliver
        metrics.delivery(self.dag_id, "callback", report, retried=pending if retry else 0)
        if store is not None and report.delivered:
            bits.write(store)
        self.log.info("Delivered %d of %d pending events (%d in all)", report.delivered, pending, count)
        log_problems(self.pair, report, self.log)
        self.show_as(context, f"{count:,} events, {already + report.delivered:,} delivered")
        self.record(context, "callback", events=count, delivered=already + report.delivered,
                    failed=count - already - report.delivered)  # fmt: skip
        if report.gone:
            raise ReceiverGoneError(
                f"{shown} answered 410 Gone for {report.gone} of {pending} events: the receiver refuses "
                "them, so they are not retried. Fix the receiver, then clear this task to deliver them.",
                undelivered=report.undelivered,
            )
        if report.failed:
            raise CallbackDeliveryError(
                f"{report.failed} of {pending} events were not delivered to {shown} "
                f"({'; '.join(sorted(report.reasons))}); they are sent again on the next try",
                undelivered=report.undelivered,
            )
        if store is not None:
            clear_delivered(store)
        return {"events": count, "delivered": already + report.delivered, "sent": report.delivered}

    def _events(self, context: Context, output: list[Event] | EventChunks) -> Iterator[list[Event]]:
        """The events a chunk at a time: only the chunk being sent is held."""
        if isinstance(output, list):
            yield output
            return
        ti: Any = context["ti"]
        for index in range(output["chunks"]):
            key = event_chunk_key(index)
            chunk = ti.xcom_pull(task_ids=output["task_id"], map_indexes=output["map_index"], key=key)
            if not isinstance(chunk, list):
                raise StateError(
                    f"XCom {key!r} of {output['task_id']}[{output['map_index']}] is gone: clear that task "
                    "(it finds the events again) and this one"
                )
            yield chunk

    async def _deliver(
        self, chunks: Iterator[list[Event]], bits: DeliveredBits, store: Store | None, pending: int
    ) -> tuple[DeliveryReport, str]:
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

        def checkpoint() -> None:
            if store is not None:
                bits.write(store)

        return await send_events(self.pair, undelivered(), pending, self.log, on_outcome, checkpoint)


async def send_events(
    pair: SyncPair,
    events: Iterable[Event],
    pending: int,
    log: Any,
    on_outcome: Callable[[Event, Delivery], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> tuple[DeliveryReport, str]:
    """One delivery pass of ``events`` to the pair's callback (short Retry-Afters waited out, no
    other retry: that is the caller's), and the URL they went to (with its secrets: redact it)."""
    hook = pair.callback_hook()
    async with hook.sender() as (send, url):
        log.info(
            "Delivering %d events to %s, %d at a time%s",
            pending, redact_url(url), hook.concurrency, " (signed)" if hook.secret else "",
        )  # fmt: skip
        report = await deliver_all(events, send, hook.concurrency, on_outcome=on_outcome,
                                   checkpoint=checkpoint, checkpoint_every=SAVE_EVERY_SECONDS)  # fmt: skip
    if report.receiver_down:
        log.error("Connection failures in a row: the rest was left for the next try")
    return report, url


def log_problems(pair: SyncPair, report: DeliveryReport, log: Any) -> None:
    """The first few undelivered events, by id and key (never their columns' values)."""
    for event, result in report.problems:
        log.error("Event %s (%s = %s) not delivered: %s", event["eventId"], pair.src.by_column,
                  event.get("byValue"), result.detail)  # fmt: skip


def deliver_once(pair: SyncPair, events: list[Event], log: Any) -> list[Event]:
    """Deliver ``events`` in one pass, starting deliveries for at most :data:`INLINE_SEND_SECONDS`
    from the first; the ones not delivered (failed, refused or not sent in time), in order."""
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

    report, url = asyncio.run(send_events(pair, in_time(), len(events), log, on_outcome))
    metrics.delivery(pair.pair_id, "scan", report, final=False)  # the callback task retries the rest
    log.info("Delivered %d of %d events to %s", report.delivered, len(events), redact_url(url))
    if started < len(events):
        log.warning("%d events not sent within %g s: left to the callback task", len(events) - started,
                    INLINE_SEND_SECONDS)  # fmt: skip
    log_problems(pair, report, log)
    return [e for e in events if not outcomes.get(e["eventId"], False)]
