"""HTTP delivery of cupid events, on top of providers-http's HttpAsyncHook (aiohttp).

A destination names either an Airflow HTTP connection (``httpConnId``: base URL, basic auth,
headers and TLS/proxy options in extras) or a plain URL. One aiohttp session with a bounded pool
of keep-alive connections serves every POST of a task; an event loop keeps ``workerNumber``
requests in flight with a fraction of the CPU that a thread per request costs (see
``bench/callback_delivery.py``: about 8x the events/s of a requests.Session in threads).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from airflow.providers.http.hooks.http import HttpAsyncHook, SessionConfig
from airflow.sdk.log import mask_secret

from cupid_airflow.signing import signature_headers

__all__ = ["CONTENT_TYPE", "CallbackHook", "Delivery", "event_body"]

CONTENT_TYPE = "application/json;charset=UTF-8"
#: Connection extra holding a Standard Webhooks secret; removed before extras become headers.
SECRET_EXTRA = "webhook_secret"
#: The longest Retry-After waited for inside one try; longer ones are left to the task retry.
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


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class CallbackHook(HttpAsyncHook):
    """POSTs events to a destination's callback.

    :param url: the full callback URL, when there is no connection; or, with ``http_conn_id``,
        the path on that connection.
    :param http_conn_id: an Airflow HTTP connection; its extra ``webhook_secret`` signs requests.
    :param secret: a ``whsec_...`` secret that signs requests (the config's, which wins).
    :param concurrency: requests in flight at once, and keep-alive connections kept.
    :param timeout: seconds to wait for the receiver.
    """

    def __init__(
        self,
        *,
        url: str | None,
        http_conn_id: str | None = None,
        secret: str | None = None,
        concurrency: int = 3,
        timeout: float = 3.0,
    ) -> None:
        super().__init__(method="POST", http_conn_id=http_conn_id or "")
        self._url = url or ""
        self.secret = secret
        self.concurrency = concurrency
        self.timeout = timeout

    async def config(self) -> SessionConfig:
        """The connection's settings, or the URL's; a ``webhook_secret`` extra is taken, never sent."""
        if not self.http_conn_id:
            parts = urlsplit(self._url)
            auth = None
            if parts.username:
                if parts.password:
                    mask_secret(parts.password)
                auth = aiohttp.BasicAuth(parts.username, parts.password or "")
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""
            self._config = SessionConfig(base_url=f"{parts.scheme}://{netloc}", headers={}, auth=auth, extra_options={})
            return self._config
        config = await super().config()
        headers = dict(config.headers or {})
        secret = headers.pop(SECRET_EXTRA, None)
        if secret:
            mask_secret(secret)
            self.secret = self.secret or secret
        self._config = SessionConfig(
            base_url=config.base_url, headers=headers, auth=config.auth, extra_options=config.extra_options
        )
        return self._config

    def url(self, config: SessionConfig) -> str:
        if not self.http_conn_id:
            parts = urlsplit(self._url)
            return config.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        base, path = config.base_url.rstrip("/"), self._url
        return f"{base}/{path.lstrip('/')}" if path else base

    async def open(self) -> tuple[aiohttp.ClientSession, str, dict[str, Any]]:
        """A pooled session, the URL to POST to, and per-request options (timeout, TLS, proxy)."""
        config = await self.config()
        extra = config.extra_options or {}
        timeout = float(extra.get("timeout", self.timeout))
        options: dict[str, Any] = {}
        if extra.get("verify_ssl") is False or extra.get("verify") is False:
            options["ssl"] = False
        if extra.get("proxy"):
            proxy = extra["proxy"]
            options["proxy"] = proxy.get("https") or proxy.get("http") if isinstance(proxy, dict) else proxy
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={**(config.headers or {}), "Content-Type": CONTENT_TYPE},
            auth=config.auth,
        )
        self.timeout = timeout
        return session, self.url(config), options

    async def deliver(
        self, session: aiohttp.ClientSession, url: str, event: dict[str, Any], options: dict[str, Any]
    ) -> Delivery:
        """POST one event; wait out a short Retry-After (429/503) and try again, a few times."""
        body = event_body(event)
        for _ in range(MAX_THROTTLED_ATTEMPTS):
            headers = (
                signature_headers(self.secret, event["eventId"], int(time.time()), body)
                if self.secret
                else {"webhook-id": event["eventId"]}
            )
            try:
                async with session.post(url, data=body, headers=headers, **options) as response:
                    status, text, retry_after = (
                        response.status,
                        await response.text(),
                        response.headers.get("Retry-After"),
                    )
            except TimeoutError:
                return Delivery("failed", f"no answer within {self.timeout:g} s", connection_problem=True)
            except aiohttp.ClientConnectionError as e:
                return Delivery("failed", f"cannot connect: {type(e).__name__}", connection_problem=True)
            except aiohttp.ClientError as e:
                return Delivery("failed", f"{type(e).__name__}: {e}")
            if 200 <= status < 300:
                return Delivery("delivered")
            if status == 410:
                return Delivery("gone", f"HTTP 410 Gone: {text[:200]}")
            wait = _retry_after(retry_after) if status in (429, 503) else None
            if wait is None or wait > MAX_RETRY_AFTER_SECONDS:
                suffix = f", Retry-After {wait:g} s" if wait is not None else ""
                return Delivery("failed", f"HTTP {status}{suffix}: {text[:200]}")
            await asyncio.sleep(wait)
        return Delivery("failed", f"still throttled after {MAX_THROTTLED_ATTEMPTS} attempts")
