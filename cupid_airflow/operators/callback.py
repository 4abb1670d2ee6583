"""POSTs compare's events to the destination's callback URL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException

from cupid_airflow.hooks.callback import CallbackHook, event_body
from cupid_airflow.operators.base import CupidOperator

__all__ = ["CallbackOperator"]

#: cupid-go's callback timeout.
TIMEOUT_SECONDS = 3.0


class CallbackOperator(CupidOperator):
    """Delivers one compare task's events: ``POST`` each with its JSON body, success on any 2xx.

    Every request carries the event's stable id in the ``webhook-id`` header, so receivers can
    drop duplicates (delivery is at-least-once). Events that were not accepted fail the task; its
    retries and a cleared task deliver them again from XCom.

    :param events: the events of one compare task (mapped).
    """

    ui_color = "#f2d9d9"

    def __init__(self, *, events: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    def execute(self, context: Context) -> dict[str, int]:
        events = self.events or []
        if not events:
            self.log.info("No events to deliver")
            return {"delivered": 0, "failed": 0}
        hook = CallbackHook(
            url=self.des.callback_url, http_conn_id=self.des.http_conn_id, pool_size=self.config.worker_number
        )
        session, url = hook.session()
        self.log.info("Delivering %d events to %s with %d workers", len(events), url, self.config.worker_number)

        def deliver(event: dict[str, Any]) -> str | None:
            try:
                response = hook.post(session, url, event_body(event), {"webhook-id": event["eventId"]}, TIMEOUT_SECONDS)
            except requests.RequestException as e:
                return f"{type(e).__name__}: {e}"
            return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

        with session, ThreadPoolExecutor(max_workers=self.config.worker_number) as pool:
            results = list(pool.map(deliver, events))
        failures = [(e["eventId"], r) for e, r in zip(events, results) if r is not None]
        for event_id, reason in failures[:20]:
            self.log.error("Event %s not delivered: %s", event_id, reason)
        if failures:
            raise AirflowException(f"{len(failures)} of {len(events)} events were not accepted by {url}")
        self.log.info("Delivered %d events", len(events))
        return {"delivered": len(events), "failed": 0}
