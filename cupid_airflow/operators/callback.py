"""POSTs compare's events to the destination's callback: at-least-once, resumable, never dropped."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.sdk import Context

from cupid_airflow.config import redact_url
from cupid_airflow.core.delivery import DeliveryReport, deliver_all
from cupid_airflow.core.state import Event, Store, as_events, clear_delivered, read_delivered, write_delivered
from cupid_airflow.exceptions import CallbackDeliveryError, ReceiverGoneError
from cupid_airflow.hooks.callback import CallbackHook
from cupid_airflow.operators.base import CupidOperator

__all__ = ["CallbackOperator"]

#: Persist delivered ids at least this often (seconds) while delivering; a killed worker resends
#: at most what it delivered since the last save.
SAVE_EVERY_SECONDS = 1.0


class CallbackOperator(CupidOperator):
    """Delivers one compare task's events to the destination's callback.

    * ``POST`` with cupid's JSON body, ``Content-Type: application/json;charset=UTF-8``; success is
      any 2xx. Each request carries the event's stable id (``webhook-id``) and, with a secret,
      Standard Webhooks signature headers. ``workerNumber`` requests are in flight at once over a
      pooled keep-alive session (:func:`cupid_airflow.core.delivery.deliver_all`).
    * A 429/503 with a short ``Retry-After`` is waited out and re-sent; other failures fail the
      task, whose retries (``failureJobRetrySecond``, doubling up to 10 minutes) send the events
      that are still undelivered. Ids of delivered events are kept in the task instance's state
      store, so a retry, or a try after the worker was killed, does not resend them (except the
      last second's worth of a killed worker: delivery is at-least-once, duplicates keep their id).
    * A 410 Gone fails the task for good: the receiver said it will never take these events.
    * The events stay in XCom: clearing the task redelivers whatever was not delivered.

    :param events: the events of one compare task (mapped).
    """

    ui_color = "#f2d9d9"

    def __init__(self, *, events: list[dict[str, Any]] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    def run(self, context: Context) -> dict[str, int]:
        events = as_events(self.events)
        store: Store | None = context.get("task_state_store")
        already = read_delivered(store, events)
        pending = [e for e in events if e["eventId"] not in already]
        if already:
            self.log.info(
                "%d of %d events were delivered by an earlier try: not resent", len(events) - len(pending), len(events)
            )
        if not pending:
            self.log.info("Nothing to deliver")
            if store is not None and already:
                clear_delivered(store)
            return {"events": len(events), "delivered": len(events) - len(pending), "sent": 0}

        report, url = asyncio.run(self._deliver(events, pending, store, already))
        shown = redact_url(url)
        sent = len(report.delivered)
        if store is not None and sent:
            write_delivered(store, events, [*already, *report.delivered])
        self.log.info("Delivered %d of %d pending events (%d in all)", sent, len(pending), len(events))
        for event, result in (report.gone + report.failed)[:20]:
            self.log.error("Event %s (%s = %s) not delivered: %s", event["eventId"], self.config.src.by_column,
                           event.get("byValue"), result.detail)  # fmt: skip
        if report.gone:
            raise ReceiverGoneError(
                f"{shown} answered 410 Gone for {len(report.gone)} of {len(pending)} events: the receiver refuses "
                "them, so they are not retried. Fix the receiver, then clear this task to deliver them.",
                undelivered=report.undelivered,
            )
        if report.failed:
            reasons = sorted({r.detail.split(":")[0] for _, r in report.failed})
            raise CallbackDeliveryError(
                f"{len(report.failed)} of {len(pending)} events were not delivered to {shown} ({'; '.join(reasons)}); "
                "they are sent again on the next try",
                undelivered=report.undelivered,
            )
        if store is not None:
            clear_delivered(store)
        return {"events": len(events), "delivered": len(already) + sent, "sent": sent}

    async def _deliver(
        self, events: list[Event], pending: list[Event], store: Store | None, already: set[str]
    ) -> tuple[DeliveryReport, str]:
        pair = self.pair
        notification = pair.des.callback_notification
        hook = CallbackHook(
            url=pair.des.callback_url,
            http_conn_id=pair.des.http_conn_id,
            secret=notification.secret if notification else None,
            concurrency=self.config.worker_number,
            timeout=float(notification.timeout_second) if notification else 3.0,
        )

        def checkpoint(delivered: list[str]) -> None:
            if store is not None:
                write_delivered(store, events, [*already, *delivered])

        async with hook.sender() as (send, url):
            self.log.info(
                "Delivering %d events to %s, %d at a time%s",
                len(pending), redact_url(url), hook.concurrency, " (signed)" if hook.secret else "",
            )  # fmt: skip
            report = await deliver_all(pending, send, hook.concurrency, checkpoint=checkpoint,
                                       checkpoint_every=SAVE_EVERY_SECONDS)  # fmt: skip
        if report.receiver_down:
            self.log.error("Connection failures in a row: the rest was left for the next try")
        return report, url
