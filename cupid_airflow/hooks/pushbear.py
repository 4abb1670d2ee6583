"""PushBear (WeChat push) alerts: ``GET <base>/sub?sendkey=..&text=..&desp=..``, as cupid-go sends them.

The base URL and, optionally, the sendkey (as its password) come from the ``pushbear_default``
connection, so alerts can go to a mirror or a test server; without that connection the public
service is used.

Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY``...), except for loopback hosts,
which are always reached directly; ``~/.netrc`` is never read.

The key travels in the query string, so every exception message and error page that echoes the
request URL is redacted before it is logged, and the whole request has a deadline: a failing task
waits at most :data:`DEADLINE_SECONDS` for its alert.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import re
import ssl
import threading
import urllib.request
from collections.abc import Coroutine
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

__all__ = ["DEADLINE_SECONDS", "DEFAULT_BASE_URL", "PushBearHook", "redact_sendkey"]

DEFAULT_BASE_URL = "https://pushbear.ftqq.com"
#: Seconds to connect, and to wait for any one read.
TIMEOUT_SECONDS = 10
#: Seconds for the whole alert, connecting to the last byte read: a server that trickles a byte
#: at a time never runs into a per-read timeout, and an alert must not hold a failing task up.
DEADLINE_SECONDS = 15
#: Characters of an error answer that are logged (after the key was blanked out).
ERROR_BODY_CHARS = 200
#: Bytes of an error answer that are read: the whole key around the logged part, at any char width.
ERROR_BODY_BYTES = 16 * ERROR_BODY_CHARS
#: The shortest piece of the key that is blanked at the ends of an answer cut short.
_MIN_KEY_PIECE = 4
_SENDKEY_PARAM = re.compile(r"(sendkey=)[^&\s\"'<>]*", re.IGNORECASE)


def redact_sendkey(text: str, sendkey: str | None) -> str:
    """``text`` with the key blanked out wherever it occurs, as typed or URL-encoded, and with any
    ``sendkey=`` query value blanked: exception messages and error pages echo the request URL."""
    if sendkey:
        for form in {sendkey, quote(sendkey, safe=""), quote_plus(sendkey)}:
            text = text.replace(form, "***")
    return _SENDKEY_PARAM.sub(r"\1***", text)


def _redact_edges(text: str, sendkey: str) -> str:
    """``text`` with a piece of the key (:data:`_MIN_KEY_PIECE` characters or more) blanked where
    it ends in the key's start or starts with the key's end: an answer cut off at the byte cap or
    the deadline may hold part of the key, which :func:`redact_sendkey` does not find."""
    for form in {sendkey, quote(sendkey, safe=""), quote_plus(sendkey)}:
        for n in range(len(form) - 1, _MIN_KEY_PIECE - 1, -1):
            if text.endswith(form[:n]):
                text = text[:-n] + "***"
                break
        for n in range(len(form) - 1, _MIN_KEY_PIECE - 1, -1):
            if text.startswith(form[-n:]):
                text = "***" + text[n:]
                break
    return text


class PushBearHook(BaseHook):
    """Sends one PushBear message.

    :param pushbear_conn_id: connection with the service's base URL (host, or a full URL in host)
        and the sendkey as password; optional.
    :param sendkey: the key to send with; wins over the connection's password.
    """

    conn_name_attr = "pushbear_conn_id"
    default_conn_name = "pushbear_default"
    conn_type = "pushbear"
    hook_name = "PushBear"

    def __init__(self, pushbear_conn_id: str = default_conn_name, sendkey: str | None = None) -> None:
        super().__init__()
        self.pushbear_conn_id = pushbear_conn_id
        self.sendkey = sendkey or None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "extra"],
            "relabeling": {"host": "Base URL (default https://pushbear.ftqq.com)", "password": "SendKey"},
        }

    @staticmethod
    def _base_url(connection: Any) -> str:
        host = (connection.host or "").rstrip("/")
        if not host:
            return DEFAULT_BASE_URL
        if "://" not in host:
            host = f"{connection.schema or 'https'}://{host}"
        return f"{host}:{connection.port}" if connection.port else host

    def _resolve(self, connection: Any | None) -> tuple[str, str | None]:
        base = self._base_url(connection) if connection is not None else DEFAULT_BASE_URL
        sendkey = self.sendkey or (connection.password if connection is not None else None)
        if sendkey:
            mask_secret(sendkey)
        return base, sendkey

    def _connection(self) -> Any | None:
        try:
            return self.get_connection(self.pushbear_conn_id)
        except AirflowNotFoundException:
            return None

    def send(self, text: str, desp: str) -> bool:
        """Send; return whether PushBear took it. Never raises and returns within about
        :data:`DEADLINE_SECONDS`, a hanging DNS lookup included: an alert must not fail a task, nor
        hold it up."""
        try:
            target = self._target(self._connection())
        except Exception as e:
            return self._not_sent(e)
        return _run_to_end(self._get(*target, text, desp), self.log) if target else False

    async def async_send(self, text: str, desp: str) -> bool:
        """:meth:`send` for the triggerer (deadline alerts), without blocking its event loop."""
        try:
            try:
                connection = await self.aget_connection(self.pushbear_conn_id)
            except AirflowNotFoundException:
                connection = None
            target = self._target(connection)
        except Exception as e:
            return self._not_sent(e)
        return await self._get(*target, text, desp) if target else False

    def _target(self, connection: Any | None) -> tuple[str, str] | None:
        """The base URL and the key to send with, or None (said in the log) without a key."""
        base, sendkey = self._resolve(connection)
        if not sendkey:
            self.log.info("No PushBear sendkey (config pushbearSendKey or connection password): alert not sent")
            return None
        return base, sendkey

    def _not_sent(self, error: Exception) -> bool:
        self.log.error("PushBear alert not sent: connection %r: %s: %s", self.pushbear_conn_id,
                       type(error).__name__, redact_sendkey(str(error), self.sendkey))  # fmt: skip
        return False

    async def _get(self, base: str, sendkey: str, text: str, desp: str) -> bool:
        """The GET itself, all of it (connect, headers, an error page) within :data:`DEADLINE_SECONDS`.
        What is logged names the server, never the key: exception messages and error pages are
        redacted with :func:`redact_sendkey`."""
        import aiohttp

        where = _origin(base)
        timeout = aiohttp.ClientTimeout(total=DEADLINE_SECONDS, connect=TIMEOUT_SECONDS, sock_read=TIMEOUT_SECONDS)
        params = {"sendkey": sendkey, "text": text, "desp": desp}
        status: int | None = None
        body = bytearray()
        cut = ""
        try:
            async with (
                asyncio.timeout(DEADLINE_SECONDS),
                aiohttp.ClientSession(timeout=timeout) as session,  # no trust_env: see _env_proxy
                session.get(f"{base}/sub", params=params, ssl=_ssl_context(base), **_env_proxy(base)) as response,
            ):
                status = response.status
                # One read returns what has arrived so far, maybe half the key: read up to the cap.
                while status >= 300 and len(body) < ERROR_BODY_BYTES:
                    if not (chunk := await response.content.read(ERROR_BODY_BYTES - len(body))):
                        break
                    body += chunk
        except TimeoutError:
            if status is None or status < 300:
                self.log.error(
                    "PushBear alert not sent: %s gave no complete answer within %d s", where, DEADLINE_SECONDS
                )
                return False
            cut = ", answer cut short:"  # the error page stalled: log what came
        except Exception as e:
            self.log.error("PushBear alert not sent to %s: %s: %s", where, type(e).__name__,
                           redact_sendkey(str(e), sendkey))  # fmt: skip
            return False
        if status >= 300:
            shown = _redact_edges(redact_sendkey(body.decode("utf-8", "replace"), sendkey), sendkey)
            self.log.error(
                "PushBear alert not accepted by %s: HTTP %s%s %s", where, status, cut, shown[:ERROR_BODY_CHARS]
            )
            return False
        self.log.info("PushBear alert sent: %s", text)
        return True


def _origin(base: str) -> str:
    """``scheme://host[:port]`` of the base URL: what a log line may say about the server."""
    parts = urlsplit(base)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _env_proxy(base: str) -> dict[str, Any]:
    """The proxy the environment names for ``base`` (``HTTP_PROXY``/``HTTPS_PROXY``, minus
    ``NO_PROXY``), as request options: PushBear is a public service, and cupid-go (Go's
    ProxyFromEnvironment) and the requests-based hook before took proxies from there. As in Go,
    a loopback host always goes direct, so a local stand-in is never sent through a proxy.
    aiohttp's ``trust_env`` is not used: it would also send ``~/.netrc`` logins to PushBear."""
    import aiohttp
    from yarl import URL

    parts = urlsplit(base)
    host = parts.hostname or ""
    if _is_loopback(host) or urllib.request.proxy_bypass(host):
        return {}
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy:
        return {}
    url = URL(proxy if "://" in proxy else f"http://{proxy}")
    return {"proxy": url.with_user(None), "proxy_auth": aiohttp.BasicAuth.from_url(url)}


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssl_context(base: str) -> ssl.SSLContext | bool:
    """certifi's CA bundle where installed (what requests used before), else the system's."""
    if not base.startswith("https:"):
        return True
    try:
        import certifi
    except ImportError:
        return True
    return ssl.create_default_context(cafile=certifi.where())


def _run_to_end(coroutine: Coroutine[Any, Any, bool], log: Any) -> bool:
    """Run ``coroutine`` from sync code (also when this thread already runs an event loop) and give
    up on it after :data:`DEADLINE_SECONDS` + 1. It runs on its own loop in a daemon thread, whose
    close does not wait for the loop's executor: aiohttp resolves host names there, and
    ``asyncio.run`` would wait out a hanging DNS lookup long after the deadline."""
    outcome: concurrent.futures.Future[bool] = concurrent.futures.Future()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # as asyncio.run does: code may ask for "the" loop
        try:
            outcome.set_result(loop.run_until_complete(coroutine))
        except BaseException as e:  # handed to the caller, which logs it
            outcome.set_exception(e)
        finally:
            _close(loop)

    threading.Thread(target=run, daemon=True, name="pushbear-alert").start()
    try:
        return outcome.result(timeout=DEADLINE_SECONDS + 1)
    except TimeoutError:
        log.error("PushBear alert not sent: no outcome within %d s", DEADLINE_SECONDS)
    except Exception as e:
        log.error("PushBear alert not sent: %s", type(e).__name__)  # the message may hold the key
    return False


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on the way out, except waiting for the default executor: a
    lookup still blocked in it is left to finish on its own."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()  # shuts the default executor down with wait=False
