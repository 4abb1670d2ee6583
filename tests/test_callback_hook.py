"""The HTTP connection options a callback honours, each against a real server on loopback: client
certificates and a private CA over real TLS, redirects, proxies from the environment, and the
options it refuses (never silently ignored)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cupid_airflow.core.delivery import Answer, SendFailed
from cupid_airflow.core.events import Event
from cupid_airflow.hooks.callback import ANSWER_PREFIX, CallbackConfigError, CallbackHook
from cupid_airflow.signing import new_secret

EVENT: Event = {"type": 1, "srcColumn": {"id": "1"}, "eventId": "e1"}


def post(hook: CallbackHook) -> Answer:
    async def go() -> Answer:
        async with hook.sender() as (send, _):
            return await send(EVENT)

    return asyncio.run(go())


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> CallbackHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", **fields}))
    return CallbackHook(url="/cb", http_conn_id=conn_id)


@pytest.fixture
def elsewhere() -> Iterator[HTTPServer]:
    """A second receiver on another port: where a redirect points; it records all it is sent."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/steal").respond_with_data("thanks")
    server.start()
    yield server
    server.stop()


LEAK = "Lq7Zt0kenInLocation"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_a_delivery_and_another_host_gets_nothing(
    httpserver: HTTPServer, elsewhere: HTTPServer, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    location = f"http://127.0.0.1:{elsewhere.port}/steal?token={LEAK}"
    httpserver.expect_request("/cb", method="POST").respond_with_response(
        Response(status=status, headers={"Location": location})
    )
    plain = CallbackHook(url=httpserver.url_for("/cb"), secret=new_secret())
    allowing = connection(monkeypatch, "allowing", host="127.0.0.1", port=httpserver.port,
                          extra={"allow_redirects": True})  # fmt: skip

    for hook in (plain, allowing):  # same-host redirects allowed: another host is still never followed
        answer = post(hook)
        assert answer.status == status
        assert f"127.0.0.1:{elsewhere.port}" in answer.text and LEAK not in answer.text and "steal" not in answer.text
    assert elsewhere.log == []  # no header, signature or row went there


def test_same_host_redirects_only_when_allowed_and_only_if_they_keep_the_post(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path, status, to in (("/cb", 307, "/hop"), ("/hop", 308, "/moved"), ("/get", 302, "/moved")):
        httpserver.expect_request(path, method="POST").respond_with_response(
            Response(status=status, headers={"Location": to})
        )
    httpserver.expect_request("/moved", method="POST").respond_with_data("ok")
    httpserver.expect_request("/moved", method="GET").respond_with_data("a GET is not a delivery")
    base = {"host": "localhost", "port": httpserver.port}

    default = post(connection(monkeypatch, "stays", **base))
    assert default.status == 307 and "allow_redirects is off" in default.text
    assert [r.path for r, _ in httpserver.log] == ["/cb"]

    httpserver.clear_log()
    followed = post(connection(monkeypatch, "follows", **base, extra={"allow_redirects": True}))
    assert (followed.status, followed.text) == (200, "ok")
    assert [(r.method, r.path) for r, _ in httpserver.log] == [("POST", "/cb"), ("POST", "/hop"), ("POST", "/moved")]
    assert {r.get_data() for r, _ in httpserver.log} == {json.dumps(EVENT, separators=(",", ":")).encode()}

    httpserver.clear_log()
    turned = post(CallbackHook(url="/get", http_conn_id="follows"))
    assert turned.status == 302 and "turns the POST into a GET" in turned.text
    assert [r.path for r, _ in httpserver.log] == ["/get"]  # the GET was never sent, so never counted

    capped = post(connection(monkeypatch, "capped", **base, extra={"allow_redirects": "true", "max_redirects": 1}))
    assert capped.status == 308 and "more than 1 redirects" in capped.text


def test_extras_from_a_connection_uri_are_text_and_still_mean_what_they_say(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``http://host/?allow_redirects=true&verify=false``: every extra arrives as a string."""
    httpserver.expect_request("/cb", method="POST").respond_with_response(
        Response(status=307, headers={"Location": "/x"})
    )
    httpserver.expect_request("/x", method="POST").respond_with_data("ok")
    monkeypatch.setenv(
        "AIRFLOW_CONN_FROM_URI",
        f"http://localhost:{httpserver.port}/?allow_redirects=true&verify=false&trust_env=false&timeout=5",
    )
    hook = CallbackHook(url="/cb", http_conn_id="from_uri")
    assert post(hook).status == 200 and hook.timeout == 5.0
    monkeypatch.setenv("AIRFLOW_CONN_BAD_FLAG", f"http://localhost:{httpserver.port}/?allow_redirects=sometimes")
    with pytest.raises(CallbackConfigError, match="'allow_redirects' is 'sometimes'; expected true or false"):
        post(CallbackHook(url="/cb", http_conn_id="bad_flag"))


def test_trust_env_sends_through_the_environments_proxy(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_by_proxy: list[str] = []

    def proxy(request: Request) -> Response:
        seen_by_proxy.append(request.url)
        return Response("proxied")

    proxy_server = HTTPServer(host="127.0.0.1", port=0)
    proxy_server.expect_request("/cb", method="POST").respond_with_handler(proxy)
    proxy_server.start()
    try:
        httpserver.expect_request("/cb", method="POST").respond_with_data("direct")
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_server.port}")
        base = {"host": "localhost", "port": httpserver.port}

        assert post(connection(monkeypatch, "plain", **base)).text == "direct"  # default: the environment is ignored
        assert post(connection(monkeypatch, "env", **base, extra={"trust_env": True})).text == "proxied"
        assert seen_by_proxy == [f"http://localhost:{httpserver.port}/cb"]
    finally:
        proxy_server.stop()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"stream": True}, "extra 'stream' is not supported for callbacks"),
        ({"check_response": False}, "extra 'check_response' is not supported"),
        ({"cert": "/nonexistent/client.pem"}, "'cert' is set but the callback URL is not https"),
        ({"cert": "/nonexistent/client.pem", "schema": "https"}, "'cert'/'verify': cannot load"),
    ],
)
def test_options_a_callback_cannot_honour_are_refused(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], message: str
) -> None:
    schema = extra.pop("schema", "http")
    hook = connection(monkeypatch, "refused", host="localhost", port=9, schema=schema, extra=extra)
    with pytest.raises(CallbackConfigError, match=message):
        post(hook)


# ---------------------------------------------------------------------------- mutual TLS


def _pem_pair(folder: Path, name: str, subject: str, issuer: Any = None, ca: bool = False) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name_ = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name_)
        .issuer_name(issuer_cert.subject if issuer_cert else name_)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


@pytest.fixture
def mutual_tls(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """An HTTPS receiver that only answers clients with a certificate from its own CA."""
    ca = _pem_pair(tmp_path, "ca", "cupid test CA", ca=True)
    _pem_pair(tmp_path, "server", "localhost", issuer=ca)
    _pem_pair(tmp_path, "client", "cupid client", issuer=ca)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_client_certificate_and_private_ca(mutual_tls: tuple[Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, port = mutual_tls
    base = {"host": "localhost", "port": port, "schema": "https"}
    trusted = {"verify": str(folder / "ca.pem"), "cert": [str(folder / "client.pem"), str(folder / "client.key")]}

    assert post(connection(monkeypatch, "mtls", **base, extra=trusted)).status == 200
    with pytest.raises(SendFailed):  # the receiver's CA is not the system's: without verify, refused
        post(connection(monkeypatch, "no_ca", **base, extra={"cert": trusted["cert"]}))
    with pytest.raises(SendFailed):  # no client certificate: the receiver hangs up
        post(connection(monkeypatch, "no_cert", **base, extra={"verify": trusted["verify"]}))


# ---------------------------------------------------------------------------- http -> https


@pytest.fixture
def plain_and_tls(tmp_path: Path) -> Iterator[tuple[Path, int, list[tuple[str, str]]]]:
    """One loopback port answering both plain HTTP and TLS (a ClientHello's first byte is 0x16):
    plain /cb redirects (308) to https on the same port, TLS /down redirects to plain http, TLS
    /cb answers 200. Records (scheme, path) of every POST."""
    ca = _pem_pair(tmp_path, "ca", "cupid test CA", ca=True)
    _pem_pair(tmp_path, "server", "localhost", issuer=ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            seen.append((scheme, self.path))
            port = self.server.server_address[1]
            location = {
                ("http", "/cb"): f"https://localhost:{port}/cb",
                ("https", "/down"): f"http://localhost:{port}/cb",
            }
            target = location.get((scheme, self.path))
            self.send_response(308 if target else 200)
            if target:
                self.send_header("Location", target)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"secure" if scheme == "https" else b"plain!")

        def log_message(self, *args: Any) -> None:
            pass

    class PlainAndTls(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[Any, Any]:
            client, address = self.socket.accept()
            client.settimeout(5)
            if client.recv(1, socket.MSG_PEEK) == b"\x16":
                client = context.wrap_socket(client, server_side=True)
            return client, address

    server = PlainAndTls(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_a_redirect_from_http_to_https_on_the_same_host_is_followed_never_back(
    plain_and_tls: tuple[Path, int, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, port, seen = plain_and_tls
    base = {"host": "localhost", "port": port}
    extra = {"allow_redirects": True, "verify": str(folder / "ca.pem")}

    upgraded = post(connection(monkeypatch, "upgrades", **base, extra=extra))
    assert (upgraded.status, upgraded.text) == (200, "secure")
    assert seen == [("http", "/cb"), ("https", "/cb")]

    seen.clear()
    off = post(connection(monkeypatch, "stays_plain", **base, extra={"verify": extra["verify"]}))
    assert off.status == 308 and "allow_redirects is off" in off.text and seen == [("http", "/cb")]

    seen.clear()
    monkeypatch.setenv("AIRFLOW_CONN_TLS", json.dumps({"conn_type": "http", "schema": "https", **base, "extra": extra}))
    downgraded = post(CallbackHook(url="/down", http_conn_id="tls"))
    assert downgraded.status == 308 and "never followed" in downgraded.text
    assert seen == [("https", "/down")]  # the event never went out in clear


def test_only_same_or_default_ports_make_an_upgrade() -> None:
    from yarl import URL

    from cupid_airflow.hooks.callback import _redirect

    assert _redirect(URL("http://h.example/cb"), 308, "https://h.example/cb", True)[0] == URL("https://h.example/cb")
    for url, location in [
        ("http://h.example:8080/cb", "https://h.example:8443/cb"),
        ("http://h.example/cb", "https://other.example/cb"),
        ("https://h.example/cb", "http://h.example/cb"),
        ("https://h.example:8443/cb", "http://h.example:8443/cb"),
    ]:
        assert _redirect(URL(url), 308, location, True)[0] is None, (url, location)


# ---------------------------------------------------------------------------- huge answers


@pytest.fixture
def huge_answers() -> Iterator[int]:
    """A receiver that answers every POST with a 50 MB body, streamed: 200 first, then 500."""
    size, chunk = 50 * 2**20, b"x" * 2**16
    requests = iter(range(1_000))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200 if next(requests) == 0 else 500)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            sent = 0
            try:
                while sent < size:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:  # the client hung up after the part it reads
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_huge_answer_is_read_only_as_far_as_the_log_needs(huge_answers: int) -> None:
    """Two 50 MB answers (one 200, one 500): both judged from their status and first KB; the
    client's memory stays far below one answer's size."""
    import tracemalloc

    port = huge_answers

    async def go() -> list[Answer]:
        async with CallbackHook(url=f"http://127.0.0.1:{port}/cb", concurrency=1).sender() as (send, _):
            return [await send(EVENT), await send(EVENT)]

    tracemalloc.start()
    try:
        answers = asyncio.run(go())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert [a.status for a in answers] == [200, 500]
    assert [len(a.text) for a in answers] == [ANSWER_PREFIX, ANSWER_PREFIX] and set(answers[0].text) == {"x"}
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MB while answers were 50 MB each"


def test_an_answer_echoing_the_event_keeps_the_connection(echoing_answers: tuple[int, list[int]]) -> None:
    """Receivers often answer with the event they got, a few KB: the body is drained (up to
    DRAIN_LIMIT) so the keep-alive connection serves the next POST, and still only its first KB is kept."""
    port, client_ports = echoing_answers

    async def go() -> list[Answer]:
        async with CallbackHook(url=f"http://127.0.0.1:{port}/cb", concurrency=1).sender() as (send, _):
            return [await send(EVENT) for _ in range(5)]

    answers = asyncio.run(go())
    assert [a.status for a in answers] == [200] * 5 and {len(a.text) for a in answers} == {ANSWER_PREFIX}
    assert len(client_ports) == 5 and len(set(client_ports)) == 1, client_ports  # one TCP connection for all


@pytest.fixture
def echoing_answers() -> Iterator[tuple[int, list[int]]]:
    """A keep-alive receiver answering each POST with 5 KB, the last 3 KB a moment later; it records
    each request's client port."""
    client_ports: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            client_ports.append(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Length", str(5 * 1024))
            self.end_headers()
            self.wfile.write(b"e" * 2 * 1024)  # in two parts, as over a network: the tail is not there yet
            self.wfile.flush()
            time.sleep(0.05)
            self.wfile.write(b"e" * 3 * 1024)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], client_ports
    server.shutdown()
    server.server_close()


def test_a_protocol_error_is_reported_without_the_urls_query() -> None:
    """aiohttp puts the request URL, query and all, into some errors' text: the reason shows it redacted."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def garbage() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    threading.Thread(target=garbage, daemon=True).start()
    try:
        with pytest.raises(SendFailed) as failed:
            post(CallbackHook(url=f"http://127.0.0.1:{listener.getsockname()[1]}/cb?token=Pr0toc0lT0ken"))
    finally:
        listener.close()
    assert "Pr0toc0lT0ken" not in failed.value.detail and "token=***" in failed.value.detail


@pytest.mark.parametrize("url", ["http://user:abc/defS3cretPassw0rd==@127.0.0.1/cb", "http://[::1/cb?k=S3cretPassw0rd"])
def test_a_callback_url_urllib_cannot_read_fails_without_quoting_it(url: str) -> None:
    """urllib's own error quotes the URL ("Port could not be cast to integer value as 'abc/def...'"),
    and an error's text reaches the task log and the alert: the hook's names the config key only."""
    with pytest.raises(CallbackConfigError, match=r"callbackNotification\.url cannot be read as a URL") as failed:
        asyncio.run(CallbackHook(url=url).settings())
    shown = "".join(traceback.format_exception(failed.value))
    assert not [p for p in {"S3cretPassw0rd"[i : i + 6] for i in range(9)} if p in shown], shown


def test_a_percent_encoded_password_in_the_url_is_sent_decoded(httpserver: HTTPServer) -> None:
    """Config validation asks for a password's '/', '?', '#' and '@' as %2F, %3F, %23, %40: the
    receiver must get the password itself, not its encoding."""
    seen: list[tuple[str, str]] = []

    def record(request: Request) -> Response:
        assert request.authorization is not None
        seen.append((str(request.authorization.username), str(request.authorization.password)))
        return Response("ok")

    httpserver.expect_request("/cb", method="POST").respond_with_handler(record)
    url = httpserver.url_for("/cb").replace("://", "://us%40er:p%2Fa%3Fs%23s%40w%25d@")
    assert post(CallbackHook(url=url)).status == 200
    assert seen == [("us@er", "p/a?s#s@w%d")]
