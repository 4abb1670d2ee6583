"""HTTP delivery of cupid events, on top of providers-http's HttpHook.

A destination names either an Airflow HTTP connection (``httpConnId``: base URL, auth, headers
in extras) or a plain URL, which becomes an in-memory HTTP connection, so both paths share the
hook's session set-up. One pooled keep-alive session serves every POST of a task.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import Connection
from airflow.sdk.log import mask_secret
from requests import Response, Session
from requests.adapters import HTTPAdapter

__all__ = ["CallbackHook", "event_body"]

CONTENT_TYPE = "application/json;charset=UTF-8"


def event_body(event: dict[str, Any]) -> bytes:
    """The JSON body of an event, as sent and as signed: compact, UTF-8, keys in event order."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class CallbackHook(HttpHook):
    """POSTs events to a destination's callback.

    :param url: the full callback URL, when there is no connection; or, with ``http_conn_id``,
        the path on that connection.
    :param pool_size: connections kept alive (the delivery concurrency).
    """

    def __init__(self, *, url: str | None, http_conn_id: str | None = None, pool_size: int = 3) -> None:
        super().__init__(method="POST", http_conn_id=http_conn_id or "cupid_callback")
        self._url = url
        self._uses_connection = http_conn_id is not None
        self.pool_size = pool_size

    def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
        if self._uses_connection:
            return super().get_connection(conn_id)
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
        return session, self.url_from_endpoint(self.endpoint)

    @staticmethod
    def post(session: Session, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        return session.post(url, data=body, headers=headers, timeout=timeout)
