"""POSTs compare's events to the destination's callback: at-least-once, resumable, never dropped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from cupid_airflow.hooks.callback import CallbackHook, Delivery
from cupid_airflow.operators.base import CupidOperator

__all__ = ["CallbackDeliveryError", "CallbackOperator", "ReceiverGoneError"]

#: task_state_store key: ids of the events a previous try of this task instance delivered.
DELIVERED_KEY = "delivered_event_ids"
#: Persist delivered ids at least this often (seconds) while delivering; a killed worker resends
#: at most what it delivered since the last save.
SAVE_EVERY_SECONDS = 1.0
#: After this many consecutive connection failures or timeouts the receiver is taken as down and
#: the rest of the try is skipped; the task retry sends everything not yet delivered.
CIRCUIT_BREAKER = 10


class CallbackDeliveryError(AirflowException):
    """Some events were not accepted; the task's retries send them again."""


class ReceiverGoneError(AirflowFailException):
    """The receiver answered 410 Gone: retrying cannot help, so the task fails without retries."""


class CallbackOperator(CupidOperator):
    """Delivers one compare task's events to the destination's callback.

    * ``POST`` with cupid's JSON body, ``Content-Type: application/json;charset=UTF-8``; success is
      any 2xx. Each request carries the event's stable id (``webhook-id``) and, with a secret,
      Standard Webhooks signature headers. ``workerNumber`` requests are in flight at once over a
      pooled keep-alive session.
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
        self.undelivered: int | None = None

    def execute(self, context: Context) -> dict[str, int]:
        events = self.events or []
        store = context.get("task_state_store")
        saved = store.get(DELIVERED_KEY, []) if store is not None else []
        already = {str(i) for i in saved} if isinstance(saved, list) else set()
        pending = [e for e in events if e["eventId"] not in already]
        if already:
            self.log.info(
                "%d of %d events were delivered by an earlier try: not resent", len(events) - len(pending), len(events)
            )
        if not pending:
            self.log.info("Nothing to deliver")
            if store is not None and already:
                store.delete(DELIVERED_KEY)
            return {"events": len(events), "delivered": len(events) - len(pending), "sent": 0}

        notification = self.des.callback_notification
        hook = CallbackHook(
            url=self.des.callback_url,
            http_conn_id=self.des.http_conn_id,
            secret=notification.secret if notification else None,
            concurrency=self.config.worker_number,
            timeout=float(notification.timeout_second) if notification else 3.0,
        )
        delivered: list[Any] = list(already)
        failed: list[tuple[dict[str, Any], Delivery]] = []
        gone: list[tuple[dict[str, Any], Delivery]] = []
        url = asyncio.run(self._deliver_all(hook, pending, store, delivered, failed, gone))
        if store is not None and len(delivered) > len(already):
            store.set(DELIVERED_KEY, delivered)

        sent = len(delivered) - len(already)
        self.log.info("Delivered %d of %d pending events (%d in all)", sent, len(pending), len(events))
        for event, result in (gone + failed)[:20]:
            self.log.error("Event %s (%s = %s) not delivered: %s", event["eventId"], self.config.src.by_column,
                           event.get("byValue"), result.detail)  # fmt: skip
        self.undelivered = len(gone) + len(failed)  # read by the PushBear alert
        if gone:
            raise ReceiverGoneError(
                f"{url} answered 410 Gone for {len(gone)} of {len(pending)} events: the receiver refuses them, "
                "so they are not retried. Fix the receiver, then clear this task to deliver them."
            )
        if failed:
            reasons = sorted({r.detail.split(":")[0] for _, r in failed})
            raise CallbackDeliveryError(
                f"{len(failed)} of {len(pending)} events were not delivered to {url} ({'; '.join(reasons)}); "
                "they are sent again on the next try"
            )
        if store is not None:
            store.delete(DELIVERED_KEY)  # all delivered: clearing this task later means "send them all again"
        return {"events": len(events), "delivered": len(delivered), "sent": sent}

    async def _deliver_all(
        self,
        hook: CallbackHook,
        pending: list[dict[str, Any]],
        store: Any,
        delivered: list[Any],
        failed: list[tuple[dict[str, Any], Delivery]],
        gone: list[tuple[dict[str, Any], Delivery]],
    ) -> str:
        """Send ``pending`` with ``workerNumber`` in flight; sort outcomes into the three lists."""
        session, url, options = await hook.open()
        self.log.info(
            "Delivering %d events to %s, %d at a time%s",
            len(pending), url, hook.concurrency, " (signed)" if hook.secret else "",
        )  # fmt: skip
        todo = iter(pending)
        state = {"streak": 0, "down": False, "saved": time.monotonic()}

        def record(event: dict[str, Any], result: Delivery) -> None:
            if result.outcome == "delivered":
                delivered.append(event["eventId"])
                state["streak"] = 0
            elif result.outcome == "gone":
                gone.append((event, result))
            else:
                failed.append((event, result))
                state["streak"] = state["streak"] + 1 if result.connection_problem else 0
                if state["streak"] >= CIRCUIT_BREAKER and not state["down"]:
                    self.log.error(
                        "%d connection failures in a row: leaving the rest for the next try", CIRCUIT_BREAKER
                    )
                    state["down"] = True
            if store is not None and time.monotonic() - state["saved"] >= SAVE_EVERY_SECONDS:
                store.set(DELIVERED_KEY, delivered)
                state["saved"] = time.monotonic()

        async def worker() -> None:  # workerNumber of these share one iterator: no task per event
            for event in todo:
                if state["down"]:
                    record(event, Delivery("failed", "skipped: the receiver looked down", connection_problem=True))
                else:
                    record(event, await hook.deliver(session, url, event, options))

        async with session:
            await asyncio.gather(*(worker() for _ in range(hook.concurrency)))
        return url
