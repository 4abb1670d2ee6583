"""HTTP delivery of cupid events, on top of providers-http's HttpAsyncHook (aiohttp).

A destination names either an Airflow HTTP connection (``httpConnId``: base URL, basic auth,
headers and TLS/proxy options in extras) or a plain URL. One aiohttp session with a bounded pool
of keep-alive connections serves every POST of a task; an event loop keeps ``workerNumber``
requests in flight with a fraction of the CPU that a thread per request costs (see
``bench/callback_delivery.py``: about 8x the events/s of a requests.Session in threads). What an
answer means, and the loop itself, are :mod:`cupid_airflow.core.delivery`'s.
"""

from __future__ import annotations

import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

import aiohttp
from airflow.providers.http.hooks.http import HttpAsyncHook, SessionConfig
from airflow.sdk.log import mask_secret
from yarl import URL

from cupid_airflow.config import REDACTED, redact_url, url_secrets
from cupid_airflow.core.delivery import Answer, Sender, SendFailed
from cupid_airflow.core.errors import PermanentError
from cupid_airflow.core.events import Event
from cupid_airflow.signing import signature_headers

__all__ = ["CONTENT_TYPE", "CallbackConfigError", "CallbackHook", "event_body"]

CONTENT_TYPE = "application/json;charset=UTF-8"
#: Connection extra holding a Standard Webhooks secret; removed before extras become headers.
SECRET_EXTRA = "webhook_secret"
#: Connection extras HttpAsyncHook hands over as request options and that a callback honours.
#: ``stream`` and ``check_response`` are refused: a callback reads its small answer whole, and a
#: non-2xx answer is never raised but judged (retry, wait, or 410 gone).
#: How much of an answer's body is kept (for the log).
ANSWER_PREFIX = 1024
#: How much of an answer's body is read at most: up to this the rest is drained so the keep-alive
#: connection is reused (receivers often echo the event); past it the connection is dropped, so a
#: receiver answering gigabytes costs a task nothing.
DRAIN_LIMIT = 64 * 1024
#: aiohttp's default: how many same-host 307/308 redirects one POST follows when redirects are allowed.
MAX_REDIRECTS = 10
_HONOURED = frozenset({"timeout", "verify_ssl", "cert", "proxy", "allow_redirects", "max_redirects", "trust_env"})
_REFUSED = {
    "stream": "callbacks read only the first KB of an answer and drop the rest",
    "check_response": "cupid judges every answer itself (2xx delivered, 410 gone, 429/503 Retry-After, else retried)",
}


class CallbackConfigError(PermanentError):
    """An HTTP connection setting a callback cannot honour: fix the connection, retrying won't."""


def event_body(event: Event) -> bytes:
    """The JSON body of an event, as sent and as signed: compact, UTF-8, keys in event order."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class _Settings:
    """Everything one delivery session needs, resolved once."""

    url: str
    headers: dict[str, str]
    auth: aiohttp.BasicAuth | None
    timeout: float
    ssl: ssl.SSLContext | bool = True
    trust_env: bool = False
    request: dict[str, Any] = field(default_factory=dict)  # per-POST options: proxy
    # Same-host 307/308 only (http to https too); never another host, never a POST turned GET.
    follow_redirects: bool = False
    max_redirects: int = MAX_REDIRECTS


class CallbackHook(HttpAsyncHook):
    """POSTs events to a destination's callback.

    :param url: the full callback URL, when there is no connection; or, with ``http_conn_id``,
        the path on that connection.
    :param http_conn_id: an Airflow HTTP connection; its extra ``webhook_secret`` signs requests,
        ``timeout``, ``verify``/``verify_ssl`` (false, or a CA bundle path), ``cert`` (a PEM
        path, or [cert, key]), ``proxy``/``proxies``, ``allow_redirects`` (same-host 307/308
        only, http to https on that host included), ``max_redirects`` and ``trust_env`` are
        honoured; other extras are sent as headers, as HttpHook does.
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
        self.path_or_url = url or ""
        self.secret = secret
        self.concurrency = concurrency
        self.timeout = timeout

    async def settings(self) -> _Settings:
        """The session's settings from the connection (through HttpAsyncHook's public ``config``) or the URL."""
        if not self.http_conn_id:
            for piece in url_secrets(self.path_or_url):
                mask_secret(piece)
            try:
                parts = urlsplit(self.path_or_url)
                port = parts.port
            except ValueError:  # its text quotes the URL ("Port could not be cast ... as 'pass'"): never shown
                raise CallbackConfigError(
                    "callbackNotification.url cannot be read as a URL (an unmatched '[', or a port that is not a "
                    "number: percent-encode a password's '/', '?', '#' and '@'); the URL is not shown"
                ) from None
            auth = None
            if parts.username:
                auth = aiohttp.BasicAuth(unquote(parts.username), unquote(parts.password or ""))  # RFC 3986 3.2.1
            netloc = parts.hostname + (f":{port}" if port else "") if parts.hostname else ""
            url = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            return _Settings(url=url, headers={}, auth=auth, timeout=self.timeout)
        config: SessionConfig = await self.config()
        headers = {str(k): str(v) for k, v in (config.headers or {}).items()}
        secret = headers.pop(SECRET_EXTRA, None)
        if secret:
            mask_secret(secret)
            self.secret = self.secret or secret
        base, path = config.base_url.rstrip("/"), self.path_or_url
        settings = _Settings(
            url=f"{base}/{path.lstrip('/')}" if path else base, headers=headers, auth=config.auth, timeout=self.timeout
        )
        self._apply_extras(settings, dict(config.extra_options or {}))
        return settings

    def _apply_extras(self, settings: _Settings, extra: dict[str, Any]) -> None:
        where = f"HTTP connection {self.http_conn_id!r}, extra"
        for key, why in _REFUSED.items():
            if key in extra:
                raise CallbackConfigError(f"{where} {key!r} is not supported for callbacks: {why}; remove it")
        unknown = sorted(set(extra) - _HONOURED)
        if unknown:  # a provider release that learnt a new option: refuse rather than ignore it
            raise CallbackConfigError(f"{where} {', '.join(map(repr, unknown))} is not supported for callbacks")
        if "timeout" in extra:
            settings.timeout = float(extra["timeout"])
        verify = _flag_or_text(where, "verify", extra.get("verify_ssl"))
        if urlsplit(settings.url).scheme == "https":
            settings.ssl = _tls(where, verify, extra.get("cert"))
        elif extra.get("cert") is not None:
            raise CallbackConfigError(
                f"{where} 'cert' is set but the callback URL is not https; give the connection the schema "
                "'https' (a URI connection written https://... becomes http in Airflow: use the JSON form)"
            )
        else:  # used only after a redirect upgrading http to https
            settings.ssl = _tls(where, verify, None)
        if extra.get("trust_env") is not None:
            settings.trust_env = _flag(where, "trust_env", extra["trust_env"])
        if extra.get("proxy"):
            proxy = extra["proxy"]
            scheme = urlsplit(settings.url).scheme
            settings.request["proxy"] = proxy.get(scheme) or proxy.get("all") if isinstance(proxy, dict) else proxy
        if extra.get("allow_redirects") is not None:
            settings.follow_redirects = _flag(where, "allow_redirects", extra["allow_redirects"])
        if extra.get("max_redirects") is not None:
            settings.max_redirects = max(0, int(extra["max_redirects"]))

    @asynccontextmanager
    async def sender(self) -> AsyncIterator[tuple[Sender, str]]:
        """A pooled keep-alive session as a :data:`~cupid_airflow.core.delivery.Sender`, and the
        URL it posts to."""
        settings = await self.settings()
        self.timeout = settings.timeout
        scrub = _scrubber(settings, self.path_or_url)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency, ssl=settings.ssl),
            timeout=aiohttp.ClientTimeout(total=settings.timeout),
            headers={**settings.headers, "Content-Type": CONTENT_TYPE},
            auth=settings.auth,
            trust_env=settings.trust_env,
        )

        async def send(event: Event) -> Answer:
            body = event_body(event)
            headers = (
                signature_headers(self.secret, event["eventId"], int(time.time()), body)
                if self.secret
                else {"webhook-id": event["eventId"]}
            )
            url, hops = URL(settings.url), 0
            try:
                while True:  # aiohttp follows nothing: a redirect is judged here, per hop
                    async with session.post(
                        url, data=body, headers=headers, allow_redirects=False, **settings.request
                    ) as response:
                        if not 300 <= response.status < 400:
                            text = scrub(await _prefix(response))
                            return Answer(response.status, text, response.headers.get("Retry-After"))
                        target, why = _redirect(
                            url, response.status, response.headers.get("Location"), settings.follow_redirects
                        )
                        if target is not None and hops >= settings.max_redirects:
                            target, why = None, f"more than {settings.max_redirects} redirects (max_redirects)"
                        if target is None:
                            return Answer(response.status, why)
                    url, hops = target, hops + 1
            except TimeoutError:
                raise SendFailed(f"no answer within {settings.timeout:g} s") from None
            except aiohttp.ClientConnectionError as e:
                raise SendFailed(f"cannot connect: {type(e).__name__}") from None
            except aiohttp.ClientError as e:
                detail = f"{type(e).__name__}: {scrub(_without_urls(str(e)))}"
                raise SendFailed(detail, connection_problem=False) from None

        async with session:
            yield send, settings.url


#: Secret values of the callback URL this short or longer are scrubbed from a receiver's answer.
SHORTEST_SCRUBBED = 3


def _scrubber(settings: _Settings, path_or_url: str) -> Callable[[str], str]:
    """Replaces the URL's secrets (user-info, query values of any useful length) and the basic-auth
    credentials, as sent or percent-encoded, by ``***`` in a receiver's answer before it is logged or
    raised: a receiver may echo its request line or headers, and the masker skips short query values."""
    found = set(url_secrets(path_or_url, SHORTEST_SCRUBBED) + url_secrets(settings.url, SHORTEST_SCRUBBED))
    if settings.auth is not None:
        found |= {settings.auth.login, settings.auth.password, settings.auth.encode().partition(" ")[2]}
    forms = {
        form for s in found if len(s) >= SHORTEST_SCRUBBED for form in (s, quote(s), quote(s, safe=""), quote_plus(s))
    }
    if not forms:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
    return lambda text: pattern.sub(REDACTED, text)


async def _prefix(response: aiohttp.ClientResponse) -> str:
    """The first :data:`ANSWER_PREFIX` bytes of the body, as text. The rest is read and dropped up to
    :data:`DRAIN_LIMIT`, so a receiver echoing the event keeps its keep-alive connection (closing it
    costs a TCP/TLS handshake per event); a longer body is dropped with its connection unread (a
    receiver answering gigabytes must not fill the worker's memory or hold the task)."""
    prefix, read = b"", 0
    while read < DRAIN_LIMIT:
        chunk = await response.content.read(min(2**14, DRAIN_LIMIT - read))
        if not chunk:
            break
        read += len(chunk)
        if len(prefix) < ANSWER_PREFIX:
            prefix += chunk[: ANSWER_PREFIX - len(prefix)]
    if read >= DRAIN_LIMIT and not response.content.at_eof():
        response.close()  # not drained: the connection goes, the pool opens another
    try:
        return prefix.decode(response.charset or "utf-8", errors="replace")
    except LookupError:
        return prefix.decode("utf-8", errors="replace")


#: Redirects that repeat the POST (RFC 9110 15.4.8, 15.4.9); 301/302/303 make clients send a GET.
_KEEP_METHOD = frozenset({307, 308})


def _redirect(url: URL, status: int, location: str | None, allowed: bool) -> tuple[URL | None, str]:
    """Where a 3xx answer points, if a callback may follow it; else None and why not, naming the
    target's scheme, host and port only (never its path or query, which may carry a token)."""
    if not location:
        return None, "a redirect without a Location"
    try:
        target = url.join(URL(location)).with_user(None).with_fragment(None)
        shown = str(target.origin())
    except ValueError:
        return None, "a redirect to an unreadable Location"
    if (target.scheme, target.host, target.port) != (url.scheme, url.host, url.port) and not _upgrade(url, target):
        return None, f"redirect to another host, {shown}, never followed: only a 2xx to the POST itself delivers"
    if not allowed:
        return None, f"redirect to {shown} not followed (the connection extra allow_redirects is off by default)"
    if status not in _KEEP_METHOD:
        return None, f"redirect to {shown} not followed: a {status} turns the POST into a GET, which delivers nothing"
    return target, ""


def _upgrade(url: URL, target: URL) -> bool:
    """http://host[:port] to https://host on the same port, or from the default 80 to the default 443:
    the same receiver asking for TLS. Never the other way: a downgrade would send the event in clear."""
    return (
        (url.scheme, target.scheme) == ("http", "https")
        and url.host == target.host
        and (url.port == target.port or (url.port, target.port) == (80, 443))
    )


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _without_urls(text: str) -> str:
    """An HTTP client's error message with every URL in it redacted (aiohttp puts the URL, query and all, in some)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})


def _flag_or_text(where: str, key: str, value: Any) -> bool | str | None:
    """A boolean extra, which a connection URI delivers as text (``?verify=false``), or other text."""
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if value is None or isinstance(value, bool | str):
        return value
    raise CallbackConfigError(f"{where} {key!r} is {type(value).__name__}; expected true, false or a path")


def _flag(where: str, key: str, value: Any) -> bool:
    flag = _flag_or_text(where, key, value)
    if not isinstance(flag, bool):
        raise CallbackConfigError(f"{where} {key!r} is {value!r}; expected true or false")
    return flag


def _tls(where: str, verify: Any, cert: Any) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl`` argument for ``verify``/``verify_ssl`` and ``cert`` (as in requests)."""
    if verify in (None, True) and cert is None:
        return True
    if verify is False and cert is None:
        return False
    cafile = verify if isinstance(verify, str) else None
    try:
        context = ssl.create_default_context(cafile=cafile)
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert is not None:
            certfile, keyfile = (cert, None) if isinstance(cert, str) else (cert[0], cert[1])
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError, IndexError, TypeError) as e:
        raise CallbackConfigError(f"{where} 'cert'/'verify': cannot load ({type(e).__name__}: {e})") from None
    return context
