"""POSTs compare's events to the destination's callback: at-least-once, resumable, never dropped."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from cupid_airflow import metrics
from cupid_airflow.callbacks import CallbackService
from cupid_airflow.config import redact_url
from cupid_airflow.core.codec import Store
from cupid_airflow.core.delivered import DeliveredBits, clear_delivered
from cupid_airflow.core.events import EventDigest, read_event_output
from cupid_airflow.exceptions import CallbackDeliveryError, ReceiverGoneError
from cupid_airflow.operators.base import CupidOperator

__all__ = ["CallbackOperator"]


class CallbackOperator(CupidOperator):
    """Delivers one compare task's events to the destination's callback
    (:class:`~cupid_airflow.callbacks.CallbackService`).

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
        save = (lambda: bits.write(store)) if store is not None else None
        service = CallbackService(self.pair, self.log)
        report, url = service.deliver_resuming(self.event_chunks(context, output), bits, count - already, save)
        shown = redact_url(url)
        pending = count - already
        retry = getattr(context.get("ti"), "try_number", 1) > 1  # it sends again what earlier tries did not deliver
        metrics.delivery(self.dag_id, "callback", report, retried=pending if retry else 0)
        if store is not None and report.delivered:
            bits.write(store)
        self.log.info("Delivered %d of %d pending events (%d in all)", report.delivered, pending, count)
        service.log_problems(report)
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
