"""A callback receiver for benchmarks: answers 200 at once, keeps connections alive, counts POSTs.

    python bench/receiver.py PORT      # GET /count: how many POSTs arrived; GET /distinct: how many
                                       # distinct webhook-id headers (events, retries counted once)

Runs in its own process so it never competes with the code under test for the GIL.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like any production receiver
    count = 0
    #: Event ids seen: a retried callback resends the same id, so this counts divergences, not POSTs.
    ids: ClassVar[set[str]] = set()
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        event_id = self.headers.get("webhook-id")  # cupid sends it with every event; the body is not parsed
        with Handler.lock:
            Handler.count += 1
            if event_id is not None:
                Handler.ids.add(event_id)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with Handler.lock:
            value = len(Handler.ids) if self.path == "/distinct" else Handler.count
        body = str(value).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
