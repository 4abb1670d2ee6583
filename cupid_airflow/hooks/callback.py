"""HTTP delivery of cupid events, on top of providers-http's HttpHook.

A destination names either an Airflow HTTP connection (``httpConnId``: base URL, auth, headers
and TLS options in extras) or a plain URL, which becomes an in-memory HTTP connection, so both
paths share the hook's session set-up. One pooled keep-alive session serves every POST of a task.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import Connection
from airflow.sdk.log import mask_secret
from requests import Session
from requests.adapters import HTTPAdapter

from cupid_airflow.signing import signature_headers

__all__ = ["CONTENT_TYPE", "CallbackHook", "Delivery", "event_body"]

CONTENT_TYPE = "application/json;charset=UTF-8"
#: Connection extra holding a Standard Webhooks secret; taken out before HttpHook turns extras into headers.
SECRET_EXTRA = "webhook_secret"
#: The longest Retry-After we wait for inside one try; longer ones are left to the task retry.
MAX_RETRY_AFTER_SECONDS = 60.0
#: How many times one event is re-sent inside a try after a 429/503 with Retry-After.
MAX_THROTTLED_ATTEMPTS = 5


def event_body(event: dict[str, Any]) -> bytes:
    """The JSON body of an event, as sent and as signed: compact, UTF-8, keys in event order."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one event: ``delivered``, ``failed`` (try again later) or ``gone`` (410: never)."""

    outcome: str
    detail: str = ""
    connection_problem: bool = False


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class CallbackHook(HttpHook):
    """POSTs events to a destination's callback.

    :param url: the full callback URL, when there is no connection; or, with ``http_conn_id``,
        the path on that connection.
    :param http_conn_id: an Airflow HTTP connection; its extra ``webhook_secret`` signs requests.
    :param secret: a ``whsec_...`` secret that signs requests (the config's, which wins).
    :param pool_size: connections kept alive (the delivery concurrency).
    :param timeout: seconds to wait for the receiver.
    """

    conn_type = "http"
    hook_name = "cupid callback"

    def __init__(
        self,
        *,
        url: str | None,
        http_conn_id: str | None = None,
        secret: str | None = None,
        pool_size: int = 3,
        timeout: float = 3.0,
    ) -> None:
        super().__init__(method="POST", http_conn_id=http_conn_id or "cupid_callback")
        self._url = url
        self._uses_connection = http_conn_id is not None
        self.secret = secret
        self.pool_size = pool_size
        self.timeout = timeout

    def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
        if not self._uses_connection:
            parts = urlsplit(self._url or "")
            if parts.password:
                mask_secret(parts.password)
            return Connection(
                conn_id=self.http_conn_id,
                conn_type="http",
                host=parts.hostname,
                port=parts.port,
                schema=parts.scheme,
                login=parts.username,
                password=parts.password,
            )
        connection = super().get_connection(conn_id)
        extra = connection.extra_dejson
        if SECRET_EXTRA in extra:
            secret = extra.pop(SECRET_EXTRA)
            mask_secret(secret)
            self.secret = self.secret or secret
            connection = Connection(
                conn_id=connection.conn_id,
                conn_type=connection.conn_type,
                host=connection.host,
                port=connection.port,
                schema=connection.schema,
                login=connection.login,
                password=connection.password,
                extra=json.dumps(extra),
            )
        return connection

    @property
    def endpoint(self) -> str:
        if self._uses_connection:
            return self._url or ""
        parts = urlsplit(self._url or "")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def session(self) -> tuple[Session, str]:
        """A pooled session configured from the connection, and the URL to POST to."""
        session = self.get_conn(headers={"Content-Type": CONTENT_TYPE})
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if "timeout" in self.merged_extra:
            self.timeout = float(self.merged_extra["timeout"])
        return session, self.url_from_endpoint(self.endpoint)

    def deliver(self, session: Session, url: str, event: dict[str, Any]) -> Delivery:
        """POST one event; wait out a short Retry-After (429/503) and try again, a few times."""
        body = event_body(event)
        for _ in range(MAX_THROTTLED_ATTEMPTS):
            headers = (
                signature_headers(self.secret, event["eventId"], int(time.time()), body)
                if self.secret
                else {"webhook-id": event["eventId"]}
            )
            try:
                response = session.post(url, data=body, headers=headers, timeout=self.timeout)
            except requests.Timeout:
                return Delivery("failed", f"no answer within {self.timeout:g} s", connection_problem=True)
            except requests.ConnectionError as e:
                return Delivery("failed", f"cannot connect: {type(e).__name__}", connection_problem=True)
            except requests.RequestException as e:
                return Delivery("failed", f"{type(e).__name__}: {e}")
            status = response.status_code
            if 200 <= status < 300:
                return Delivery("delivered")
            if status == 410:
                return Delivery("gone", f"HTTP 410 Gone: {response.text[:200]}")
            wait = _retry_after(response) if status in (429, 503) else None
            if wait is None or wait > MAX_RETRY_AFTER_SECONDS:
                suffix = f", Retry-After {wait:g} s" if wait is not None else ""
                return Delivery("failed", f"HTTP {status}{suffix}: {response.text[:200]}")
            time.sleep(wait)
        return Delivery("failed", f"still throttled after {MAX_THROTTLED_ATTEMPTS} attempts")
