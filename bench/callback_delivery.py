"""Callback throughput against a local receiver that answers 200 at once (issue #4).

    python bench/callback_delivery.py [--events 10000]

Measures, against the same receiver process (bench/receiver.py, HTTP/1.1 keep-alive):
  * the ceiling: plain concurrent keep-alive clients (8 threads with a persistent http.client
    connection each, and aiohttp with 8 connections), the best of two runs of each;
  * cupid-go's pattern: 3 workers, a new connection for every POST;
  * the CallbackOperator delivering the events (its hook, pooled session and thread pool), at the
    default concurrency (workerNumber 3) and at workerNumber 8.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scan_compare import received, start_receiver  # noqa: E402


def events(count: int) -> list[dict[str, object]]:
    return [
        {
            "type": 1 + i % 2,
            "srcColumn": {"id": str(i), "number": f"U{i:010d}", "name": f"name {i}", "amount": "12.50"},
            "eventId": uuid.uuid4().hex,
            "desTable": "user",
            "byValue": f"U{i:010d}",
        }
        for i in range(count)
    ]


def ceiling(port: int, batch: list[dict[str, object]], threads: int = 8) -> float:
    bodies = [json.dumps(e).encode() for e in batch]
    chunks = [bodies[i::threads] for i in range(threads)]

    def run(chunk: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for body in chunk:
            conn.request("POST", "/cb", body, {"Content-Type": "application/json"})
            conn.getresponse().read()
        conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, chunks))
    return len(batch) / (time.perf_counter() - t0)


def ceiling_async(port: int, batch: list[dict[str, object]], connections: int = 8) -> float:
    import asyncio

    import aiohttp

    bodies = iter([json.dumps(e).encode() for e in batch])
    url = f"http://127.0.0.1:{port}/cb"

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

            async def worker() -> None:
                for body in bodies:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()

            await asyncio.gather(*(worker() for _ in range(connections)))

    t0 = time.perf_counter()
    asyncio.run(run())
    return len(batch) / (time.perf_counter() - t0)


def cupid_pattern(port: int, batch: list[dict[str, object]]) -> float:
    """cupid-go: 3 callback workers, Go's http.Post with a fresh client (a new connection) per event."""
    bodies = [json.dumps(e).encode() for e in batch]

    def post(body: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        conn.request("POST", "/cb", body, {"Content-Type": "application/json;charset=UTF-8", "Connection": "close"})
        conn.getresponse().read()
        conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(post, bodies))
    return len(batch) / (time.perf_counter() - t0)


def operator(port: int, batch: list[dict[str, object]], workers: int, folder: Path) -> float:
    from cupid_airflow.operators.callback import CallbackOperator

    config = {
        "workerNumber": workers,
        "src": {"dsn": "u:p@tcp(127.0.0.1)/db", "table": "t", "byColumn": "number", "update": False},
        "des": [
            {
                "dsn": "u:p@tcp(127.0.0.1)/db",
                "table": "t",
                "columns": {"name": "name"},
                "byColumn": "number",
                "callbackNotification": {"url": f"127.0.0.1:{port}/cb"},
            }
        ],
    }
    path = folder / f"bench_{workers}.json"
    path.write_text(json.dumps(config))
    op = CallbackOperator(task_id="callback", config_file=str(path), events=batch)
    t0 = time.perf_counter()
    result = op.execute({})  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    assert result["sent"] == len(batch), result
    return len(batch) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    proc, port = start_receiver()
    try:
        batch = events(args.events)
        ceiling(port, batch[:500])  # warm up
        # The best of two plain keep-alive clients, twice each: the receiver's limit, not a client's.
        limit = max(f(port, batch) for f in (ceiling, ceiling_async, ceiling, ceiling_async))
        cupid = cupid_pattern(port, batch)
        with tempfile.TemporaryDirectory() as tmp:
            default = operator(port, batch, 3, Path(tmp))
            wide = operator(port, batch, 8, Path(tmp))
        print(f"receiver ceiling (plain client, 8 keep-alive connections): {limit:,.0f} events/s")
        print(f"cupid-go pattern (3 workers, new connection per POST): {cupid:,.0f} events/s")
        print(f"CallbackOperator, workerNumber 3 (default): {default:,.0f} events/s = "
              f"{default / limit:.0%} of the ceiling, {default / cupid:.1f}x cupid-go")  # fmt: skip
        print(f"CallbackOperator, workerNumber 8: {wide:,.0f} events/s = {wide / limit:.0%} of the ceiling")
        print(f"targets: >= 70% of the ceiling and >= 1,000 events/s; received {received(port):,} POSTs in all")
    finally:
        proc.terminate()


if __name__ == "__main__":
    threading.stack_size(512 * 1024)
    main()
