"""A loopback TCP proxy whose connections a test can cut: a dropped database connection, for real."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to ``target``. ``cut_after(n)`` arms a one-time cut: the first
    connection that has sent ``n`` bytes back to its client is closed mid-stream (both sides).
    ``restart(seconds)`` plays a server restart: every connection is dropped and the port refuses
    connections for ``seconds``, then listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.cuts = 0
        self.restarts = 0
        self._cut_at: int | None = None
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._listen()

    def _listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True, name="proxy-accept").start()

    def cut_after(self, nbytes: int) -> None:
        self._cut_at = nbytes

    def restart(self, seconds: float) -> None:
        with self._lock:
            self.restarts += 1
            _close(self.listener)
            for s in self._open:
                _close(s)
            self._open.clear()
        timer = threading.Timer(seconds, lambda: None if self._stop.is_set() else self._listen())
        timer.daemon = True
        timer.start()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=10)
            with self._lock:
                self._open += [client, server]
            sent = [0]
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, sent), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: list[int] | None) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if counted is not None:
                    counted[0] += len(data)
                    if self._should_cut(counted[0]):
                        break
        except OSError:
            pass  # the other direction closed it
        for s in (src, dst):
            _close(s)

    def _should_cut(self, total: int) -> bool:
        with self._lock:
            if self._cut_at is not None and total >= self._cut_at:
                self._cut_at = None
                self.cuts += 1
                return True
        return False

    def close(self) -> None:
        self._stop.set()
        _close(self.listener)
        with self._lock:
            for s in self._open:
                _close(s)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
