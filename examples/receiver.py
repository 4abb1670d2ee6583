"""An example cupid callback receiver: verifies signatures, drops duplicates, stores each event once.

    CUPID_WEBHOOK_SECRET=whsec_... python examples/receiver.py --port 20000 --db events.sqlite3

Standard library only, so it can be copied anywhere. Delivery is at-least-once: the same event
(same ``webhook-id``) may arrive more than once, after a retry or a worker crash. Answer 2xx to a
duplicate too, or cupid keeps sending it.

* Signature (when a secret is set): ``webhook-signature`` holds ``v1,<base64 HMAC-SHA256>`` of
  ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` keyed with the base64 part of the secret;
  several space-separated signatures may be present. Compare in constant time and reject stale
  timestamps (replays).
* Before the body is read: a request without fresh signature headers is answered 401, one without
  a Content-Length 411, one longer than ``--max-body`` 413, each on a closed connection, so
  nobody can make the receiver buffer gigabytes.
* Deduplication: the ``webhook-id`` is the primary key; a second insert of the same id is a no-op.
* Repair: this is where your own code re-syncs the row (``type`` 1: missing, 2: different).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60
#: cupid's events hold one row each; a MEDIUMTEXT column can make that 16 MB, JSON escaping more.
MAX_BODY = 32 * 2**20


def looks_signed(headers: dict[str, str]) -> bool:
    """Signature headers present and fresh: checked before the body is read, so an unsigned or
    replayed request costs nothing however long it says its body is."""
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    return any(s.startswith("v1,") for s in headers.get("webhook-signature", "").split())


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    if not looks_signed(headers):
        return False
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    for signature in headers.get("webhook-signature", "").split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


class Store:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type INTEGER, body TEXT)")
        self.lock = threading.Lock()
        self.duplicates = 0

    def add(self, event_id: str, event: dict[str, object], body: bytes) -> bool:
        """Store the event; False when it was already stored (a duplicate delivery)."""
        with self.lock, self.db:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?)", (event_id, event["type"], body.decode())
            )
            if cursor.rowcount == 0:
                self.duplicates += 1
            return cursor.rowcount == 1


def make_handler(store: Store, secret: str | None, max_body: int = MAX_BODY) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status: int, text: str, close: bool = False) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if close:  # the unread body must not be taken for the next request
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            length = headers.get("content-length", "")
            if secret and not looks_signed(headers):
                self.reply(401, "missing or stale signature", close=True)
                return
            if not length.isdigit():
                self.reply(411, "a Content-Length is required", close=True)
                return
            if int(length) > max_body:
                self.reply(413, f"bodies of more than {max_body} bytes are refused", close=True)
                return
            body = self.rfile.read(int(length))
            if secret and not verify(secret, headers, body):
                self.reply(401, "bad signature")
                return
            event = json.loads(body)
            new = store.add(headers.get("webhook-id") or event["eventId"], event, body)
            self.reply(200, "stored" if new else "duplicate")

        def do_GET(self) -> None:  # a status page: how many stored, how many duplicates dropped
            count = store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            self.reply(200, json.dumps({"stored": count, "duplicates": store.duplicates}))

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (containers)")
    parser.add_argument("--port", type=int, default=20000)
    parser.add_argument("--db", default="cupid-events.sqlite3")
    parser.add_argument("--max-body", type=int, default=MAX_BODY, help="longest body accepted, in bytes")
    args = parser.parse_args()
    handler = make_handler(Store(args.db), os.environ.get("CUPID_WEBHOOK_SECRET"), args.max_body)
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    print(f"listening on http://{args.host}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
