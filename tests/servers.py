"""Loopback servers that misbehave for real: one that never answers, one that answers a byte a second,
one that answers in scripted pieces."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.proxy import CuttableProxy


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte: a hung database or proxy.
    ``accepted`` counts the connections made to it."""

    def __init__(self) -> None:
        self.accepted = 0
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="silent-accept").start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._open.append(client)
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        """Hold the connection open (subclasses answer)."""

    def close(self) -> None:
        self._stop.set()
        _close(self.listener)
        for s in self._open:
            _close(s)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrickleServer(SilentServer):
    """Reads an HTTP request, then sends ``response`` one byte a second: each read gets a byte
    long before any per-read timeout, so only a deadline on the whole request ends the wait."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
        threading.Thread(target=self._trickle, args=(client,), daemon=True, name="trickle").start()

    def _trickle(self, client: socket.socket) -> None:
        try:
            _read_request(client)
            for i in range(len(self.response)):
                if self._stop.is_set():
                    return
                client.sendall(self.response[i : i + 1])
                time.sleep(1)
        except OSError:
            pass  # the client gave up
        finally:
            _close(client)


class ScriptedServer(SilentServer):
    """Reads an HTTP request (kept in ``requests``), then sends ``parts`` with ``pause`` seconds
    between them, each in its own TCP segment, and closes; with ``hold`` it keeps the connection
    open after the last part instead: an answer that arrives in pieces, or stops half-way."""

    def __init__(self, *parts: bytes, pause: float = 0.5, hold: bool = False) -> None:
        self.parts, self.pause, self.hold = parts, pause, hold
        self.requests: list[bytes] = []
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
        threading.Thread(target=self._answer, args=(client,), daemon=True, name="scripted").start()

    def _answer(self, client: socket.socket) -> None:
        try:
            request = _read_request(client)
            self.requests.append(request)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i, part in enumerate(self.parts):
                if i:
                    time.sleep(self.pause)
                client.sendall(part)
            if self.hold:
                self._stop.wait(60)
        except OSError:
            pass  # the client gave up
        finally:
            _close(client)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


class FreezableProxy(CuttableProxy):
    """Forwards to ``target`` until :meth:`freeze`, then drops every byte both ways while keeping
    the connections open: a server (or the network to it) that stops answering mid-session."""

    frozen = False

    def freeze(self) -> None:
        self.frozen = True

    def _pump(self, src: socket.socket, dst: socket.socket, counted: list[int] | None) -> None:
        try:
            src.settimeout(None)  # the proxy's own 10 s connect timeout must not end a frozen session
            while data := src.recv(65536):
                if not self.frozen:
                    dst.sendall(data)
        except OSError:
            pass  # the other direction closed it
        for s in (src, dst):
            _close(s)


def _read_request(client: socket.socket) -> bytes:
    """An HTTP request's head, as far as the client sent it within 5 s."""
    client.settimeout(5)
    request = b""
    while b"\r\n\r\n" not in request and (data := client.recv(4096)):
        request += data
    return request
