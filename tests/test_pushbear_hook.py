"""PushBear alerts that cannot be sent: the key never shows in a log, and no alert waits for long."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import cupid_airflow.hooks.pushbear as pushbear_module
from cupid_airflow.hooks.pushbear import DEADLINE_SECONDS, PushBearHook
from tests.conftest import PUSHBEAR_NOWHERE
from tests.pairs import Pair, pair
from tests.servers import ScriptedServer, SilentServer, TrickleServer, closed_port
from tests.test_alerts import failing_then_ok

__all__ = ["pair"]  # the fixture

SENDKEY = "SCT-q7Zx2Wk9Lm4Rv8Tp3N5f"
#: PushBear's answer, padded to take over 200 s at a byte a second.
TRICKLED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"." * 100 + b"\r\n"
    b"Content-Length: 26\r\n\r\n" + b'{"code": 0, "message": ""}'
)


def pieces(secret: str, size: int = 6) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def leaked(text: str) -> list[str]:
    return [p for p in pieces(SENDKEY) if p in text]


def point_pushbear_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PUSHBEAR_DEFAULT", json.dumps({"conn_type": "pushbear", "host": url}))


def send(how: str) -> bool:
    hook = PushBearHook(sendkey=SENDKEY)
    if how == "sync":
        return hook.send("cupid: test", "- body")
    return asyncio.run(hook.async_send("cupid: test", "- body"))


@pytest.fixture
def echoing_502() -> Iterator[HTTPServer]:
    """A gateway error page that echoes the request line, as proxies' error pages do."""

    def answer(request: Request) -> Response:
        line = f"{request.method} {request.full_path} HTTP/1.1"
        return Response(f"<html><h1>502 Bad Gateway</h1><p>{line}</p><p>key {SENDKEY}</p></html>", status=502)

    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/sub").respond_with_handler(answer)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_refused_connection_is_logged_without_the_key(
    how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    point_pushbear_at(monkeypatch, f"http://127.0.0.1:{port}")

    assert send(how) is False

    output = caplog.text + "".join(capfd.readouterr())
    assert f"PushBear alert not sent to http://127.0.0.1:{port}" in output
    assert not leaked(output), output


@pytest.mark.parametrize("how", ["sync", "async"])
def test_an_error_page_echoing_the_request_is_logged_short_and_without_the_key(
    how: str,
    echoing_502: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="werkzeug")  # the stand-in's own access log shows the key
    point_pushbear_at(monkeypatch, f"http://127.0.0.1:{echoing_502.port}")

    assert send(how) is False

    assert len(echoing_502.log) == 1  # it was sent, and the answer echoed the key
    assert SENDKEY in echoing_502.log[0][1].get_data(as_text=True)
    output = caplog.text + "".join(capfd.readouterr())
    assert "HTTP 502 <html><h1>502 Bad Gateway</h1><p>GET /sub?sendkey=***&text=" in output
    assert "key ***</p>" in output
    assert not leaked(output), output


def test_a_server_that_trickles_its_answer_is_given_up_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A byte a second never runs into the 10 s per-read timeout: only the deadline ends it (the
    triggerer's deadline alerts use this path)."""
    with TrickleServer(TRICKLED) as server:
        point_pushbear_at(monkeypatch, f"http://127.0.0.1:{server.port}")
        started = time.monotonic()
        assert send("async") is False
        elapsed = time.monotonic() - started
    assert server.accepted == 1
    assert elapsed < DEADLINE_SECONDS + 10  # the answer alone takes over 200 s to trickle in
    assert f"gave no complete answer within {DEADLINE_SECONDS} s" in "".join(capfd.readouterr())


@pytest.mark.usefixtures("airflow_db")
def test_a_trickling_pushbear_never_holds_up_or_fails_the_task(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The callback's third failure alerts while PushBear answers a byte a second: the alert is
    given up at the deadline, logged, and the callback's next try delivers."""
    pair.configure(src={"pushbearSendKey": SENDKEY}, failureJobRetrySecond=1)
    pair.add_source(("a", "x", None, None, None))
    pair.answer_with(failing_then_ok(3))
    with TrickleServer(TRICKLED) as server:
        point_pushbear_at(monkeypatch, f"http://127.0.0.1:{server.port}")
        started = time.monotonic()
        result = pair.run()  # asserts the run succeeded
        elapsed = time.monotonic() - started

    assert server.accepted == 1
    assert result.tries[("callback", 0)] == 4
    assert elapsed < 120  # the old per-read timeout waited the whole 200 s trickle
    output = "".join(capfd.readouterr())
    assert f"gave no complete answer within {DEADLINE_SECONDS} s" in output
    assert not leaked(output)


def test_without_a_stand_in_tests_page_a_closed_loopback_port_never_the_public_service(
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert PushBearHook(sendkey=SENDKEY).send("cupid: test", "- body") is False

    output = "".join(capfd.readouterr())
    assert f"PushBear alert not sent to {PUSHBEAR_NOWHERE}" in output
    assert "ftqq" not in output


HANGING_HOST = "pushbear-dns-hangs.test"


@pytest.fixture
def hanging_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Resolving :data:`HANGING_HOST` blocks for 30 s (or until the event is set), as a dead DNS
    server does; every other name resolves as usual. The event is set at teardown."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HANGING_HOST:
            release.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield release
    release.set()


@pytest.mark.parametrize("how", ["sync", "sync inside a running loop", "async"])
def test_a_hanging_dns_lookup_is_given_up_at_the_deadline(
    how: str,
    hanging_dns: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """aiohttp resolves names in the event loop's executor, and ``asyncio.run`` waits for that
    executor on the way out: the alert gave up at the deadline, yet the caller waited 30 s."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(pushbear_module, "DEADLINE_SECONDS", 2)
    point_pushbear_at(monkeypatch, f"http://{HANGING_HOST}:8080")
    hook = PushBearHook(sendkey=SENDKEY)

    async def in_a_loop() -> tuple[bool, float]:
        started = time.monotonic()
        sent = hook.send("cupid: test", "- body") if how.startswith("sync") else await hook.async_send("t", "d")
        elapsed = time.monotonic() - started
        hanging_dns.set()  # lets this test's own asyncio.run end without waiting 30 s for its executor
        return sent, elapsed

    if how == "sync":
        started = time.monotonic()
        sent, elapsed = hook.send("cupid: test", "- body"), time.monotonic() - started
    else:
        sent, elapsed = asyncio.run(in_a_loop())

    assert sent is False
    assert elapsed < 2 + 3  # the lookup alone blocks 30 s
    output = caplog.text + "".join(capfd.readouterr())
    assert f"PushBear alert not sent: http://{HANGING_HOST}:8080 gave no complete answer within 2 s" in output
    assert not leaked(output), output


def error_page_split_in_the_key(length: int | None = None) -> tuple[bytes, bytes]:
    """A 502 whose page names the key bare, sent as two pieces cut in the middle of the key."""
    page = f"<html><h1>502 Bad Gateway</h1><p>key {SENDKEY}</p></html>".encode()
    cut = page.index(SENDKEY.encode()) + len(SENDKEY) // 2
    head = f"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {length or len(page)}\r\n\r\n"
    return head.encode() + page[:cut], page[cut:]


@pytest.mark.parametrize("how", ["sync", "async"])
def test_an_error_page_arriving_in_pieces_is_read_whole_before_the_key_is_blanked(
    how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """One read returns only what has arrived: the first half of the key, which no redaction finds."""
    caplog.set_level(logging.DEBUG)
    with ScriptedServer(*error_page_split_in_the_key(), pause=0.5) as server:
        point_pushbear_at(monkeypatch, f"http://127.0.0.1:{server.port}")
        assert send(how) is False

    assert server.accepted == 1
    output = caplog.text + "".join(capfd.readouterr())
    assert "HTTP 502 <html><h1>502 Bad Gateway</h1><p>key ***</p></html>" in output
    assert not leaked(output), output


@pytest.mark.parametrize("how", ["sync", "async"])
def test_an_error_page_cut_off_in_the_key_is_logged_without_the_piece_of_key(
    how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The page stops half-way through the key and the deadline ends the wait: the status and the
    page so far are logged, the half key blanked."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(pushbear_module, "DEADLINE_SECONDS", 2)
    first, _ = error_page_split_in_the_key(length=500)
    with ScriptedServer(first, hold=True) as server:
        point_pushbear_at(monkeypatch, f"http://127.0.0.1:{server.port}")
        started = time.monotonic()
        assert send(how) is False
        elapsed = time.monotonic() - started

    assert elapsed < 2 + 3
    output = caplog.text + "".join(capfd.readouterr())
    assert "HTTP 502, answer cut short: <html><h1>502 Bad Gateway</h1><p>key ***" in output
    assert not leaked(output), output


ACCEPTED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\nConnection: close\r\n\r\n"
    b'{"code": 0, "message": ""}'
)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_loopback_pushbear_is_reached_directly_whatever_proxy_the_environment_names(
    host: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP(S)_PROXY set and no NO_PROXY, aiohttp's trust_env sent even a loopback stand-in
    through the proxy (here one that never answers)."""
    monkeypatch.setattr(pushbear_module, "DEADLINE_SECONDS", 2)
    clear_proxy_environment(monkeypatch)
    with SilentServer() as proxy, ScriptedServer(ACCEPTED) as pushbear:
        for name in PROXY_VARIABLES[:3]:
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        point_pushbear_at(monkeypatch, f"http://{host}:{pushbear.port}")

        assert send(how) is True

    assert pushbear.accepted == 1 and proxy.accepted == 0


def test_no_netrc_login_is_sent_to_pushbear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's trust_env also looked the PushBear host up in ~/.netrc and sent that login along."""
    clear_proxy_environment(monkeypatch)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-pw-8c1e\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with ScriptedServer(ACCEPTED) as pushbear:
        point_pushbear_at(monkeypatch, f"http://127.0.0.1:{pushbear.port}")
        assert send("sync") is True

    assert b"GET /sub?sendkey=" in pushbear.requests[0]
    assert b"authorization" not in pushbear.requests[0].lower()


def test_any_other_host_goes_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """As cupid-go and the requests-based hook did: a deployment behind an egress proxy keeps its alerts."""
    clear_proxy_environment(monkeypatch)
    real = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:  # a slip must not query real DNS
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(socket.EAI_NONAME, "this test resolves loopback names only")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    with ScriptedServer(ACCEPTED) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://someone:proxy-pw@127.0.0.1:{proxy.port}")
        point_pushbear_at(monkeypatch, "http://pushbear.example.test")
        assert send("sync") is True

    request = proxy.requests[0].decode()
    assert request.startswith("GET http://pushbear.example.test/sub?sendkey=")
    assert "Proxy-Authorization: Basic " in request


def test_a_deployment_stack_pages_a_closed_loopback_port_unless_told_otherwise(tmp_path: Path) -> None:
    """tests/stack.py starts real Airflow components, which never see this process's conftest:
    without its default, a stack test with a sendkey in its config paged the public service."""
    from tests.stack import AirflowStack

    default = json.loads(AirflowStack(tmp_path).env["AIRFLOW_CONN_PUSHBEAR_DEFAULT"])
    assert default == {"conn_type": "pushbear", "host": PUSHBEAR_NOWHERE}
    mine = json.dumps({"conn_type": "pushbear", "host": "http://127.0.0.1:1234"})
    assert (
        AirflowStack(tmp_path, extra_env={"AIRFLOW_CONN_PUSHBEAR_DEFAULT": mine}).env["AIRFLOW_CONN_PUSHBEAR_DEFAULT"]
        == mine
    )
