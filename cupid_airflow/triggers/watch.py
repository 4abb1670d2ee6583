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
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from cupid_airflow.config import CupidConfig, load_config
from cupid_airflow.core.state import WATCH_MARKS_KEY, WatchMarks, read_watch_marks
from cupid_airflow.core.watch import Observation, advance
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
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(WATCH_THREADS, thread_name_prefix="cupid-watch")
    return _executor


def _in_thread(func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
    return asyncio.get_running_loop().run_in_executor(_pool(), func, *args)


def _backoff(failures: int, interval: float) -> float:
    return min(MAX_BACKOFF_SECONDS, interval * 2 ** min(failures, 10))


def _problem(error: BaseException) -> str:
    """A driver or config error in one line, with the notes that say which table and server (no
    driver puts a password in its messages; the config's secrets are masked as well)."""
    notes = "; ".join(getattr(error, "__notes__", []))
    return f"{type(error).__name__}: {error}" + (f" ({notes})" if notes else "")


@lru_cache(maxsize=64)
def _config_at(path: str, mtime_ns: int, size: int) -> CupidConfig:
    return load_config(path)


def load_pair(config_file: str, destination: int, pair_id: str) -> SyncPair:
    """The pair, its config file read once per version: the triggerer starts every watcher of a
    500-destination file at once, and each asks for its stream key on the event loop."""
    stat = os.stat(config_file)
    return SyncPair(_config_at(config_file, stat.st_mtime_ns, stat.st_size), destination, pair_id, config_file)


async def _load(config_file: str, destination: int, pair_id: str) -> SyncPair:
    """The pair, waiting out a config that does not load (a deploy rewriting it, say): the DAG was
    valid when parsed, and the next parse replaces or removes this watcher if it no longer is."""
    failures = 0
    while True:
        try:
            pair = await _in_thread(load_pair, config_file, destination, pair_id)
        except Exception as e:
            failures += 1
            delay = _backoff(failures, 1.0)
            log.warning("cupid watch %s: config %s does not load, trying again in %.0f s: %s",
                        pair_id, config_file, delay, _problem(e))  # fmt: skip
            await asyncio.sleep(delay)
            continue
        _mask(pair)
        return pair


def _mask(pair: SyncPair) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - the SDK ships with every Airflow 3
        return
    for secret in pair.config.secrets():
        mask_secret(secret)


def _close_after(table: Table, pending: Future[Any] | asyncio.Future[Any] | None) -> None:
    """Close the connection once no thread uses it: a driver connection closed under a running
    query can crash the process."""
    if pending is None or pending.done():
        table.close()
    else:
        pending.add_done_callback(lambda _: table.close())


async def observe_source(pair: SyncPair) -> AsyncIterator[Observation]:
    """Poll ``pair``'s source for ever, yielding each observation; connection errors are logged
    and retried with backoff (never raised: the watcher outlives a source outage)."""
    src = pair.src
    ids_every = max(MIN_POLL_SECONDS, src.insert_interval_millisecond / 1000) if src.insert else math.inf
    watches_updates = src.update and src.update_column is not None
    updates_every = max(MIN_POLL_SECONDS, src.update_interval_millisecond / 1000) if watches_updates else math.inf
    if math.isinf(ids_every) and math.isinf(updates_every):
        log.info("cupid watch %s: neither new ids nor an update column to watch", pair.pair_id)
        await asyncio.Event().wait()  # never fires; the safety schedule still runs the DAG
    loop = asyncio.get_running_loop()
    next_ids = next_updates = loop.time()
    table: Table | None = None
    pending: asyncio.Future[Any] | None = None
    failures = 0
    try:
        while True:
            now = loop.time()
            ids_due, updates_due = now >= next_ids, now >= next_updates
            try:
                if table is None:
                    pending = _in_thread(pair.source_table, WATCH_READ_TIMEOUT_SECONDS)
                    table = await pending
                pending = _in_thread(pair.observe, table, ids_due, updates_due)
                seen = await pending
            except Exception as e:
                failures += 1
                delay = _backoff(failures, min(ids_every, updates_every))
                log.warning("cupid watch %s: polling %s failed, trying again in %.0f s: %s",
                            pair.pair_id, src.table, delay, _problem(e))  # fmt: skip
                if table is not None:
                    _close_after(table, pending)
                    table = None
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
        if table is not None:
            _close_after(table, pending)


class SourceWatchTrigger(BaseEventTrigger):
    """Fires when the source of pair ``pair_id`` (destination ``destination`` of ``config_file``)
    gained ids or updated rows since the pair's last event.

    Used through an :class:`~airflow.sdk.AssetWatcher` on the pair's watch asset; the DAG factory
    sets it up (config key ``watch``).
    """

    def __init__(self, *, config_file: str, destination: int = 0, pair_id: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config_file = config_file
        self.destination = destination
        self.pair_id = pair_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"config_file": self.config_file, "destination": self.destination, "pair_id": self.pair_id},
        )

    @cached_property
    def _pair(self) -> SyncPair | None:
        try:
            return load_pair(self.config_file, self.destination, self.pair_id)
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
        stored = await self._read_marks()
        marks = stored
        async for seen in shared_stream:
            marks, changes = advance(marks, seen)
            if changes:
                self.log.info("cupid watch %s: %s: starting a run", self.pair_id, "; ".join(changes))
                yield TriggerEvent(  # type: ignore[no-untyped-call]
                    {"pair_id": self.pair_id, "changes": changes, "max_id": marks["max_id"],
                     "max_updated": marks["max_updated"], "rows_at_max": marks["rows_at_max"]}
                )  # fmt: skip
            if marks != stored and await self._write_marks(marks):
                stored = marks

    async def _read_marks(self) -> WatchMarks | None:
        store = self.asset_state_store
        if store is None:
            return None
        try:
            return read_watch_marks(await store.aget(WATCH_MARKS_KEY))
        except Exception as e:
            self.log.warning("cupid watch %s: cannot read its marks (%s): the first poll fires", self.pair_id, e)
            return None

    async def _write_marks(self, marks: WatchMarks) -> bool:
        """Store the marks after the event went out: a crash in between costs one spare run at the
        restart, never a change that nobody checks."""
        store = self.asset_state_store
        if store is None:
            return True
        try:
            await store.aset(WATCH_MARKS_KEY, cast("dict[str, Any]", marks))
        except Exception as e:
            self.log.warning("cupid watch %s: cannot store its marks (%s); trying at the next change", self.pair_id, e)
            return False
        return True
