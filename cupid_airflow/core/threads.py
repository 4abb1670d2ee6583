"""The thread helpers that let one task overlap its database round trips.

Database drivers block; a compare task spends most of its time waiting on the source's stream
and the destination's lookups. These helpers overlap the waits while keeping the two rules that
make threads safe here: each thread has its own connection, and no thread outlives the block
that owns the connections (so nothing reads on a connection that is being closed).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["LookupPool", "both_sides", "prefetched"]

_T = TypeVar("_T")
_R = TypeVar("_R")
_DONE = object()
#: How long closing waits for a reader that is stuck in a driver call; the connection is closed
#: after that either way (which also unblocks the driver).
JOIN_SECONDS = 30.0


class ThreadAware(Protocol):
    @property
    def thread_safe(self) -> bool: ...


@contextmanager
def prefetched(items: Iterator[_T], depth: int = 2) -> Iterator[Iterator[_T]]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead of the consumer.

    A context manager, not a generator: leaving the block (normally or by an exception) stops the
    reader and waits for it *before* the caller's outer ``with`` closes the connection it reads on.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        """Queue ``item`` unless the consumer has gone; whether it was queued."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            offer(e)
        finally:
            close: Any = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own cleanup (its cursor) runs on the thread that used it

    thread = threading.Thread(target=produce, name="cupid-prefetch", daemon=True)

    def consume() -> Generator[_T, None, None]:
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    thread.start()
    consumer = consume()
    try:
        yield consumer
    finally:
        stop.set()
        consumer.close()
        # A producer waiting on the full queue sees ``stop`` within 0.2 s; one inside a driver
        # call finishes it first (bounded by the connection's read timeout).
        thread.join(timeout=JOIN_SECONDS)


class LookupPool(Generic[_T]):
    """``lookup(resource, batch)`` on a few threads, each with its own resource (a connection),
    results in input order. A resource that must stay on its thread (SQLite) runs inline."""

    def __init__(self, make: Callable[[], _T], threads: int, close: Callable[[_T], None]) -> None:
        self._make, self._close = make, close
        self._local = threading.local()
        self._made: list[_T] = []
        self._lock = threading.Lock()
        first = self._resource()
        self._threads = threads if getattr(first, "thread_safe", True) else 0
        self._pool = ThreadPoolExecutor(max_workers=max(1, self._threads), thread_name_prefix="cupid-lookup")

    def __enter__(self) -> LookupPool[_T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for resource in self._made:
            self._close(resource)

    def _resource(self) -> _T:
        resource: _T | None = getattr(self._local, "resource", None)
        if resource is None:
            resource = self._local.resource = self._make()
            with self._lock:
                self._made.append(resource)
        return resource

    def map(self, lookup: Callable[[_T, _R], Any], batches: Iterator[_R]) -> Iterator[tuple[_R, Any]]:
        """``(batch, lookup(resource, batch))`` for every batch, ``threads`` lookups in flight."""
        pending: deque[tuple[_R, Future[Any]]] = deque()

        def call(batch: _R) -> Any:
            return lookup(self._resource(), batch)

        for batch in batches:
            if not self._threads:
                yield batch, call(batch)
                continue
            pending.append((batch, self._pool.submit(call, batch)))
            if len(pending) > self._threads:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def both_sides(
    pool: ThreadPoolExecutor, mine: ThreadAware, theirs: ThreadAware, ask_mine: Callable[[], _T],
    ask_theirs: Callable[[], _T],
) -> tuple[_T, _T]:  # fmt: skip
    """The same question to both sides at once, when both connections may be used from another
    thread (not SQLite's); one after the other otherwise."""
    if mine.thread_safe and theirs.thread_safe:
        remote = pool.submit(ask_theirs)
        return ask_mine(), remote.result()
    return ask_mine(), ask_theirs()
