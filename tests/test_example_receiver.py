"""The example receiver in examples/: verifies cupid's signatures and stores each event once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cupid_airflow.signing import new_secret, signature_headers
from tests.conftest import REPO
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")
SECRET = new_secret()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "receiver.py"), "--port", str(port), "--db", str(tmp_path / "e.db")],
        env={"CUPID_WEBHOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith("listening")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def status(url: str) -> dict[str, int]:
    return requests.get(url, timeout=5).json()


def test_signed_events_are_stored_once_and_duplicates_acknowledged(pair: Pair, receiver: str) -> None:
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["callbackNotification"] = {"url": f"{receiver}/cupid", "secret": SECRET}
    pair.config_path.write_text(json.dumps(config))
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(5)])

    pair.run()
    assert status(receiver) == {"stored": 5, "duplicates": 0}

    pair.run(conf={"start_id": 1, "end_id": 5})  # the same divergences again: the same event ids
    assert status(receiver) == {"stored": 5, "duplicates": 5}


def test_forged_or_unsigned_requests_are_refused(receiver: str) -> None:
    body = json.dumps({"type": 1, "srcColumn": {"id": "1"}, "eventId": "x"}).encode()
    forged = signature_headers(new_secret(), "x", int(time.time()), body)
    assert requests.post(f"{receiver}/cupid", data=body, headers=forged, timeout=5).status_code == 401
    stale = signature_headers(SECRET, "x", int(time.time()) - 3600, body)
    assert requests.post(f"{receiver}/cupid", data=body, headers=stale, timeout=5).status_code == 401
    assert requests.post(f"{receiver}/cupid", data=body, headers={"webhook-id": "x"}, timeout=5).status_code == 401
    good = signature_headers(SECRET, "x", int(time.time()), body)
    assert requests.post(f"{receiver}/cupid", data=body, headers=good, timeout=5).status_code == 200


def raw_post(url: str, headers: dict[str, str]) -> str:
    """Send only a request's head (its body never comes) and return the status line of the answer.
    A receiver that waited for the body would never answer: the socket timeout fails the test."""
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **headers}.items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /cupid HTTP/1.1\r\n{head}\r\n".encode())
        return sock.makefile("rb").readline().decode().strip()


def test_unsigned_or_oversized_bodies_are_refused_before_they_are_read(receiver: str) -> None:
    huge = {"Content-Type": "application/json", "Content-Length": str(600 * 2**20)}
    assert raw_post(receiver, huge) == "HTTP/1.1 401 Unauthorized"
    signed = signature_headers(SECRET, "x", int(time.time()), b"{}")  # valid-looking headers, any body
    assert raw_post(receiver, {**huge, **signed}) == "HTTP/1.1 413 Request Entity Too Large"
    chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **signed}
    assert raw_post(receiver, chunked) == "HTTP/1.1 411 Length Required"
    body = json.dumps({"type": 1, "srcColumn": {"id": "1"}, "eventId": "x"}).encode()
    good = signature_headers(SECRET, "x", int(time.time()), body)
    assert requests.post(f"{receiver}/cupid", data=body, headers=good, timeout=5).status_code == 200
