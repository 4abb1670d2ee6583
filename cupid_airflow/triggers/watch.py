"""The source watcher: runs in Airflow's triggerer and starts a pair's DAG when its source changed.

One poll loop per source table (Airflow 3.3's shared streams: every destination of the source,
in whatever config file, subscribes to it) asks the server for ``MAX(id)`` every
``insertIntervalMillisecond`` and for the newest ``updateColumn`` value every
``updateIntervalMillisecond`` (:meth:`cupid_airflow.hooks.table.Table.newest`: index-only). Each
pair compares what the poll saw with its marks (:func:`cupid_airflow.core.watch.advance`) and fires
one event when something advanced; the marks live in the asset state store of the pair's watch
asset, so a triggerer restart neither loses a change nor fires for an old one.

Like the operators, the trigger carries only the config's path, destination index and pair id:
Airflow stores trigger arguments in its metadata database, and a config holds passwords.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from cupid_airflow.core.errors import error_notes
from cupid_airflow.core.state import WATCH_MARKS_KEY, WatchMarks, read_watch_marks, watch_marks_value
from cupid_airflow.core.watch import Observation, Pacer
from cupid_airflow.pair import SyncPair

if TYPE_CHECKING:
    from cupid_airflow.hooks.table import Table

__all__ = ["MIN_POLL_SECONDS", "WATCH_READ_TIMEOUT_SECONDS", "SourceWatchTrigger"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: cupid's intervals are in milliseconds and may be 1; polling faster than this buys nothing.
MIN_POLL_SECONDS = 0.5
#: A poll's queries answer in milliseconds: a server that takes this long is treated as down.
WATCH_READ_TIMEOUT_SECONDS = 30
#: Longest wait between attempts while the source or the config cannot be reached.
MAX_BACKOFF_SECONDS = 60.0
#: Threads for the polls' blocking database calls, apart from the triggerer's default executor so
#: a hung source server cannot starve other triggers. A poll never overlaps itself, so a thread is
#: busy for milliseconds per poll, and for at most the timeouts when a server hangs.
WATCH_THREADS = 16
#: The longest one poll (connect and queries) may take before it counts as failed; MySQL's own
#: timeouts end it sooner, and this bounds drivers that have none.
POLL_TIMEOUT_SECONDS = 45.0
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(WATCH_THREADS, thread_name_prefix="cupid-watch")
    return _executor


def _backoff(failures: int, interval: float) -> float:
    return min(MAX_BACKOFF_SECONDS, interval * 2 ** min(failures, 10))


def _problem(error: BaseException) -> str:
    """A driver or config error in one line, with the notes that say which table and server (no
    driver puts a password in its messages; the config's secrets are masked as well)."""
    notes = error_notes(error)
    return f"{type(error).__name__}: {error}" + (f" ({notes})" if notes else "")


def _version(config_file: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(config_file)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


async def _load(config_file: str, destination: int, pair_id: str) -> SyncPair:
    """The pair, waiting out a config that does not load (a deploy rewriting it, say): the DAG was
    valid when parsed, and the next parse replaces or removes this watcher if it no longer is."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        try:
            return await loop.run_in_executor(_pool(), SyncPair.load, config_file, destination, pair_id)
        except Exception as e:
            failures += 1
            delay = _backoff(failures, 1.0)
            log.warning("cupid watch %s: config %s does not load, trying again in %.0f s: %s",
                        pair_id, config_file, delay, _problem(e))  # fmt: skip
            await asyncio.sleep(delay)


class _Source:
    """The source table of one poll loop and the thread its driver calls run on.

    Every blocking call runs on a worker thread: the shared pool, or a thread of its own for
    drivers whose connections belong to one thread (SQLite). A connection is closed on the thread
    that used it, after its last call returned: closing one under a running query can crash the
    process. A config edit that only changes credentials is picked up at the next poll; one that
    changes the source changes the trigger's arguments, and Airflow replaces the trigger.
    """

    def __init__(self, pair: SyncPair) -> None:
        self.pair = pair
        self.key = pair.watch_key()
        self.version = _version(pair.config_file or "")
        self.executor: ThreadPoolExecutor = _pool()
        self.table: Table | None = None
        self.running: Future[Any] | None = None

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        self.running = self.executor.submit(func, *args)
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.running)), POLL_TIMEOUT_SECONDS)

    def refresh(self) -> None:
        config_file = self.pair.config_file or ""
        version = _version(config_file)
        if version is None or version == self.version:
            return
        self.version = version
        try:
            pair = SyncPair.load(config_file, self.pair.index, self.pair.pair_id)
        except Exception:
            return  # being rewritten, or broken: keep polling as configured; the next parse decides
        if pair.watch_key() == self.key:
            self.pair = pair
            self.drop()  # new credentials, maybe: connect again with them

    async def observe(self, ids: bool, updates: bool) -> Observation:
        if self.table is None:
            table = await self._call(self.pair.source_table, WATCH_READ_TIMEOUT_SECONDS)
            if not table.thread_safe and self.executor is _pool():
                self.executor = ThreadPoolExecutor(1, thread_name_prefix="cupid-watch-own")
            self.table = table
            # from a worker thread, whose calls reach the supervisor, where the triggerer masks logs
            await self._call(self.pair.mask_secrets)
        return await self._call(self.pair.observe, self.table, ids, updates)

    def drop(self) -> None:
        """Close the connection once no thread uses it; errors closing it are only logged."""
        table, running, self.table = self.table, self.running, None
        if table is None:
            return

        def close(*_: Any) -> None:
            try:
                table.close()
            except Exception as e:
                log.debug("cupid watch: closing %s: %s", table.name, e)

        if running is not None and not running.done():
            running.add_done_callback(close)  # runs on the worker thread when the call returns
            return
        try:
            self.executor.submit(close)
        except RuntimeError:  # the executor is shut down: the interpreter is exiting
            close()

    def close(self) -> None:
        self.drop()
        if self.executor is not _pool():
            self.executor.shutdown(wait=False)


async def observe_source(pair: SyncPair) -> AsyncIterator[Observation]:
    """Poll ``pair``'s source for ever, yielding each observation; errors (connection, timeout,
    driver) are logged and retried with backoff, never raised: the watcher outlives a source
    outage, and a raise would end the watcher of every pair sharing the poll."""
    src = pair.src
    ids_every = max(MIN_POLL_SECONDS, src.insert_interval_millisecond / 1000) if src.insert else math.inf
    watches_updates = src.update and src.update_column is not None
    updates_every = max(MIN_POLL_SECONDS, src.update_interval_millisecond / 1000) if watches_updates else math.inf
    if math.isinf(ids_every) and math.isinf(updates_every):
        log.info("cupid watch %s: neither new ids nor an update column to watch", pair.pair_id)
        await asyncio.Event().wait()  # never fires; the safety schedule still runs the DAG
    loop = asyncio.get_running_loop()
    next_ids = next_updates = loop.time()
    source = _Source(pair)
    failures = 0
    try:
        while True:
            now = loop.time()
            ids_due, updates_due = now >= next_ids, now >= next_updates
            source.refresh()
            try:
                seen = await source.observe(ids_due, updates_due)
            except Exception as e:
                failures += 1
                delay = _backoff(failures, min(ids_every, updates_every))
                log.warning("cupid watch %s: polling %s failed, trying again in %.0f s: %s",
                            pair.pair_id, src.table, delay, _problem(e))  # fmt: skip
                source.drop()
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("cupid watch %s: polling %s works again", pair.pair_id, src.table)
                failures = 0
            if ids_due:
                next_ids = now + ids_every
            if updates_due:
                next_updates = now + updates_every
            yield seen
            await asyncio.sleep(max(0.0, min(next_ids, next_updates) - loop.time()))
    finally:
        source.close()


class SourceWatchTrigger(BaseEventTrigger):
    """Fires when the source of pair ``pair_id`` (destination ``destination`` of ``config_file``)
    gained ids or updated rows since the pair's last event.

    Used through an :class:`~airflow.sdk.AssetWatcher` on the pair's watch asset; the DAG factory
    sets it up (config key ``watch``). ``source`` is :meth:`SyncPair.watch_version` when the DAG
    was parsed: it only makes the arguments change when the watched source does.
    """

    def __init__(self, *, config_file: str, destination: int = 0, pair_id: str, source: str = "") -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config_file = config_file
        self.destination = destination
        self.pair_id = pair_id
        self.source = source

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "config_file": self.config_file,
                "destination": self.destination,
                "pair_id": self.pair_id,
                "source": self.source,
            },
        )

    @cached_property
    def _pair(self) -> SyncPair | None:
        try:
            return SyncPair.load(self.config_file, self.destination, self.pair_id)
        except Exception:
            return None  # run() waits for the config to load

    def shared_stream_key(self) -> Hashable | None:
        pair = self._pair
        return None if pair is None else ("cupid-watch", *pair.watch_key())

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        pair = await _load(kwargs["config_file"], kwargs.get("destination", 0), kwargs["pair_id"])
        async for seen in observe_source(pair):
            yield seen

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """This pair's own poll: when the config did not load at start, so no stream key was known."""
        async for event in self.filter_shared_stream(self.open_shared_stream(self.serialize()[1])):
            yield event

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(await self._read_marks())
        async for seen in shared_stream:
            changes = pacer.observe(seen, loop.time())
            if changes:
                marks = pacer.fired
                assert marks is not None
                self.log.info("cupid watch %s: %s: starting a run", self.pair_id, "; ".join(changes))
                yield TriggerEvent(  # type: ignore[no-untyped-call]
                    {"pair_id": self.pair_id, "changes": changes, "max_id": marks["max_id"],
                     "max_updated": marks["max_updated"], "rows_at_max": marks["rows_at_max"]}
                )  # fmt: skip
            marks = pacer.to_store(loop.time())
            if marks is not None:
                await self._write_marks(pacer, marks, loop.time())

    async def _read_marks(self) -> WatchMarks | None:
        store = self.asset_state_store
        if store is None:
            return None
        try:
            return read_watch_marks(await store.aget(WATCH_MARKS_KEY))
        except Exception as e:
            self.log.warning("cupid watch %s: cannot read its marks (%s): the first poll fires", self.pair_id, e)
            return None

    async def _write_marks(self, pacer: Pacer, marks: WatchMarks, now: float) -> None:
        """Store the marks (:class:`Pacer` says when: after Airflow persisted the event)."""
        store = self.asset_state_store
        if store is None:
            pacer.stored_as(marks)
            return
        try:
            await store.aset(WATCH_MARKS_KEY, watch_marks_value(marks))
        except Exception as e:
            self.log.warning("cupid watch %s: cannot store its marks (%s); trying again in a minute", self.pair_id, e)
            pacer.store_failed(now)
            return
        pacer.stored_as(marks)
