"""The HTTP connection options a callback honours, each against a real server on loopback: client
certificates and a private CA over real TLS, redirects, proxies from the environment, and the
options it refuses (never silently ignored)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cupid_airflow.core.delivery import Answer, SendFailed
from cupid_airflow.core.state import Event
from cupid_airflow.hooks.callback import CallbackConfigError, CallbackHook

EVENT: Event = {"type": 1, "srcColumn": {"id": "1"}, "eventId": "e1"}


def post(hook: CallbackHook) -> Answer:
    async def go() -> Answer:
        async with hook.sender() as (send, _):
            return await send(EVENT)

    return asyncio.run(go())


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> CallbackHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", **fields}))
    return CallbackHook(url="/cb", http_conn_id=conn_id)


def test_redirects_are_followed_or_not_as_the_connection_says(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for path, to in (("/cb", "/hop"), ("/hop", "/moved")):
        httpserver.expect_request(path, method="POST").respond_with_response(
            Response(status=307, headers={"Location": to})
        )
    httpserver.expect_request("/moved", method="POST").respond_with_data("ok")
    base = {"host": "localhost", "port": httpserver.port}

    assert post(connection(monkeypatch, "follows", **base)).status == 200
    refused = connection(monkeypatch, "stays", **base, extra={"allow_redirects": False})
    assert post(refused).status == 307  # judged as a failed delivery, retried by the task
    capped = connection(monkeypatch, "capped", **base, extra={"max_redirects": 1})
    with pytest.raises(SendFailed, match="TooManyRedirects"):
        post(capped)


def test_extras_from_a_connection_uri_are_text_and_still_mean_what_they_say(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``http://host/?allow_redirects=false&verify=false``: every extra arrives as a string."""
    httpserver.expect_request("/cb", method="POST").respond_with_response(
        Response(status=307, headers={"Location": "/x"})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_FROM_URI",
        f"http://localhost:{httpserver.port}/?allow_redirects=false&verify=false&trust_env=false&timeout=5",
    )
    hook = CallbackHook(url="/cb", http_conn_id="from_uri")
    assert post(hook).status == 307 and hook.timeout == 5.0
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
