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
import time
import zlib
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from cupid_airflow.core import watch as core_watch
from cupid_airflow.core.errors import error_notes
from cupid_airflow.core.watch import (
    RECHECK_AT_KEY,
    WATCH_MARKS_KEY,
    Observation,
    Pacer,
    Rechecks,
    WatchMarks,
    read_watch_marks,
    watch_marks_value,
)
from cupid_airflow.pair import SyncPair

if TYPE_CHECKING:
    from cupid_airflow.hooks.table import Table

__all__ = ["MIN_POLL_SECONDS", "WATCH_READ_TIMEOUT_SECONDS", "SourceWatchTrigger", "stream_key"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: cupid's intervals are in milliseconds and may be 1; polling faster than this buys nothing.
MIN_POLL_SECONDS = 0.5
#: A poll's queries answer in milliseconds: a server that takes this long is treated as down.
WATCH_READ_TIMEOUT_SECONDS = 30
#: Longest wait between attempts while the source or the config cannot be reached.
MAX_BACKOFF_SECONDS = 60.0
#: Connections per source server and login (host and port, or socket, with the DSN's user and
#: password, or an Airflow connection) for every table watched on it, in any database, each with
#: a thread of its own that runs its tables' polls one after another: 200 watched tables in 50
#: databases of one server cost 4 connections, not 200 (MariaDB's default ``max_connections`` is
#: 151). A poll is a millisecond or two of queries, so 4 lanes keep up with hundreds of tables
#: polled every 2 s.
LANES_PER_SERVER = 4
#: Threads for loading configs, apart from the triggerer's default executor.
CONFIG_THREADS = 2
#: The longest one poll (connect and queries) may take before it counts as failed; MySQL's own
#: timeouts end it sooner, and this bounds drivers that have none.
POLL_TIMEOUT_SECONDS = 45.0
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(CONFIG_THREADS, thread_name_prefix="cupid-watch-config")
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


async def _try_load(config_file: str, destination: int, pair_id: str) -> SyncPair | None:
    """The pair, loaded on the config threads; None when its config does not load now."""
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _pool(), SyncPair.load, config_file, destination, pair_id
        )
    except Exception:
        return None


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


#: Errors of one query that leave the connection usable (a missing table or column, say): the
#: lane keeps its connection for the other tables. Anything else reconnects it.
_QUERY_ERRORS = ("ProgrammingError", "DataError", "IntegrityError", "NotSupportedError")


class _Lane:
    """One connection to a source server and the one thread that uses it, shared by the polls
    of up to every table on that server, in any of its databases (:data:`LANES_PER_SERVER`
    lanes per server and login).

    Every driver call runs on the lane's thread, so a connection is used, and closed, only by the
    thread that opened it (SQLite requires that; closing a MySQL connection under a running query
    can crash the process), and polls of one lane never overlap: no lock.
    """

    def __init__(self, key: tuple[Hashable, int]) -> None:
        self.key = key
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="cupid-watch")
        self.anchor: Table | None = None  # owns the connection
        self.tables: dict[str, Table] = {}  # every table of the lane, over the anchor's connection
        self.users = 0

    def table(self, pair: SyncPair) -> Table:
        """``pair``'s source table over the lane's connection, opened on first use. Lane thread only."""
        name = pair.watch_server()[1]
        if name not in self.tables:
            if self.anchor is None:
                self.anchor = pair.source_table(WATCH_READ_TIMEOUT_SECONDS)
                self.anchor.conn  # noqa: B018 (connect now: errors belong to this poll)
            self.tables[name] = pair.source_table(over=self.anchor, name=name)
        return self.tables[name]

    def observe(self, pair: SyncPair, ids: bool, updates: bool) -> Observation:
        """One poll of ``pair``'s source. Lane thread only."""
        try:
            return pair.observe(self.table(pair), ids, updates)
        except Exception as e:
            if type(e).__name__ not in _QUERY_ERRORS:
                self.reset()
            raise

    def reset(self) -> None:
        """Close the connection (every table of the lane connects again at its next poll); errors
        closing it are only logged. Lane thread only."""
        anchor, self.anchor, self.tables = self.anchor, None, {}
        if anchor is not None:
            try:
                anchor.close()
            except Exception as e:
                log.debug("cupid watch: closing a connection: %s", e)


_lanes: dict[tuple[Hashable, int], _Lane] = {}


def _join_lane(pair: SyncPair) -> _Lane:
    """The lane for ``pair``'s source: by server and login (:meth:`SyncPair.watch_server`: a
    changed password gets a connection of its own) and by table."""
    server, table = pair.watch_server()
    key = (server, zlib.crc32(table.encode()) % LANES_PER_SERVER)
    lane = _lanes.get(key)
    if lane is None:
        lane = _lanes[key] = _Lane(key)
    lane.users += 1
    return lane


def _leave_lane(lane: _Lane) -> None:
    """One poll loop fewer on ``lane``; the last one out closes the connection and the thread."""
    lane.users -= 1
    if lane.users > 0:
        return
    if _lanes.get(lane.key) is lane:
        del _lanes[lane.key]
    try:
        lane.executor.submit(lane.reset)  # after the call in progress, on the lane's thread
        lane.executor.shutdown(wait=False)
    except RuntimeError:  # the interpreter is exiting
        pass


#: The pairs each shared poll serves now, by stream key: pair id -> (config file, destination),
#: in the order they subscribed. Airflow opens a shared stream with the arguments of its first
#: subscriber and keeps them for the stream's life; the poll reads this instead, so it always
#: polls with the config of a pair that is still watched (its file may since be deleted, its
#: password rotated in the others).
_subscribers: dict[Hashable, dict[int, tuple[str, str, int]]] = {}  # key -> {id(trigger): (pair id, file, index)}
#: How often each shared poll's set of pairs changed: a poll whose pair left looks for another
#: config only when the set changed since it last looked, not at every poll.
_generations: dict[Hashable, int] = {}


def _served(key: Hashable, trigger: object, entry: tuple[str, str, int] | None) -> None:
    """Add (``entry``) or remove (None) a trigger among the pairs a shared poll serves."""
    served = _subscribers.setdefault(key, {})
    if entry is None:
        served.pop(id(trigger), None)
    else:
        served[id(trigger)] = entry
    _generations[key] = _generations.get(key, 0) + 1
    if not served:
        del _subscribers[key]


def stream_key(pair: SyncPair) -> tuple[str, ...]:
    """The shared stream of ``pair``'s source (:meth:`SyncPair.watch_key`: safe to print)."""
    return ("cupid-watch", *pair.watch_key())


class _Source:
    """The source table of one poll loop, polled over its server's :class:`_Lane`, with the
    config of one of the pairs the poll serves (:data:`_subscribers`).

    A config edit that only changes credentials is picked up at the next poll (on a lane of the
    new credentials); one that changes the source changes the trigger's arguments, and Airflow
    replaces the trigger. When the pair whose config the poll uses is no longer watched (its file
    deleted, its DAG gone), the poll takes the config of another pair it serves; while polls
    fail, it tries the configs of the others in turn (one of them may hold a rotated password).
    Configs load on the watcher's config threads, never on the triggerer's event loop.
    """

    def __init__(self, pair: SyncPair) -> None:
        self.pair = pair
        self.key = pair.watch_key()
        self.stream = stream_key(pair)
        self.version = _version(pair.config_file or "")
        self.lane: _Lane | None = None
        self.masked = False
        self.followed = -1  # the generation of _subscribers last followed

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        assert self.lane is not None
        running = self.lane.executor.submit(func, *args)
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), POLL_TIMEOUT_SECONDS)

    def _live(self) -> list[tuple[str, str, int]]:
        return list(dict.fromkeys((_subscribers.get(self.stream) or {}).values()))

    async def refresh(self) -> None:
        """Take up an edit of the config in use, or another pair's config if this one's pair is
        no longer served by the poll."""
        live = self._live()
        if live and self.pair.pair_id not in {pair_id for pair_id, _, _ in live}:
            generation = _generations.get(self.stream, 0)
            if generation != self.followed:
                self.followed = generation
                await self.follow(live)
            return
        config_file = self.pair.config_file or ""
        version = _version(config_file)
        if version is None or version == self.version:
            return
        self.version = version
        pair = await _try_load(config_file, self.pair.index, self.pair.pair_id)
        if pair is not None:  # else being rewritten, or broken: keep polling as configured
            self._use(pair)

    async def rotate(self) -> None:
        """After a failed poll: the next served pair's config, when there is another."""
        live = self._live()
        ids = [pair_id for pair_id, _, _ in live]
        if len(live) > 1 or (live and self.pair.pair_id not in ids):
            start = ids.index(self.pair.pair_id) + 1 if self.pair.pair_id in ids else 0
            await self.follow(live[start:] + live[:start])

    async def follow(self, candidates: list[tuple[str, str, int]]) -> None:
        """Use the first of these pairs whose config loads and still names this source."""
        for pair_id, config_file, destination in candidates:
            pair = await _try_load(config_file, destination, pair_id)
            before = self.pair.pair_id
            if pair is not None and self._use(pair):
                if pair_id != before:
                    log.info("cupid watch %s: polling %s with the config of %s", pair_id, pair.src.table, config_file)
                return

    def _use(self, pair: SyncPair) -> bool:
        if pair.watch_key() != self.key:
            return False
        moved = pair.watch_server() != self.pair.watch_server()
        self.pair, self.masked, self.version = pair, False, _version(pair.config_file or "")
        if moved:
            self.close()  # new credentials, maybe: the next poll joins the lane they lead to
        return True

    async def observe(self, ids: bool, updates: bool) -> Observation:
        if self.lane is None:
            self.lane = _join_lane(self.pair)
        if not self.masked:
            # from a worker thread, whose calls reach the supervisor, where the triggerer masks logs
            await self._call(self.pair.mask_secrets)
            self.masked = True
        return await self._call(self.lane.observe, self.pair, ids, updates)

    def close(self) -> None:
        lane, self.lane = self.lane, None
        if lane is not None:
            _leave_lane(lane)


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
            await source.refresh()
            try:
                seen = await source.observe(ids_due, updates_due)
            except Exception as e:
                failures += 1
                delay = _backoff(failures, min(ids_every, updates_every))
                log.warning("cupid watch %s: polling %s failed, trying again in %.0f s: %s",
                            source.pair.pair_id, src.table, delay, _problem(e))  # fmt: skip
                await source.rotate()
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("cupid watch %s: polling %s works again", source.pair.pair_id, src.table)
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
        return None if pair is None else stream_key(pair)

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
        key = self.shared_stream_key()
        if key is not None:  # served by the poll from now until this trigger ends (its DAG gone, say)
            _served(key, self, (self.pair_id, self.config_file, self.destination))
        try:
            async for event in self._events(shared_stream):
                yield event
        finally:
            if key is not None:
                _served(key, self, None)

    async def _events(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        pacer = Pacer(await self._read_marks())
        rechecks = Rechecks()
        async for seen in shared_stream:
            changes = pacer.observe(seen, loop.time())
            if not changes:
                await self._read_recheck(rechecks)
                if rechecks.due(time.time()) and loop.time() - pacer.last_fire >= core_watch.MIN_EVENT_GAP_SECONDS:
                    changes = ["candidates due to be looked at again"]
                    pacer.last_fire = loop.time()
            if changes:
                marks = pacer.fired
                self.log.info("cupid watch %s: %s: starting a run", self.pair_id, "; ".join(changes))
                rechecks.run_started(time.time())
                yield TriggerEvent(  # type: ignore[no-untyped-call]
                    {"pair_id": self.pair_id, "changes": changes, "max_id": marks["max_id"] if marks else None,
                     "max_updated": marks["max_updated"] if marks else None,
                     "rows_at_max": marks["rows_at_max"] if marks else 0}
                )  # fmt: skip
            marks = pacer.to_store(loop.time())
            if marks is not None:
                await self._write_marks(pacer, marks, loop.time())

    async def _read_recheck(self, rechecks: Rechecks) -> None:
        """Read when the pair's scan wants its candidates looked at again, when it is time to."""
        now = time.time()
        store = self.asset_state_store
        if store is None or not rechecks.should_read(now):
            return
        try:
            rechecks.read(await store.aget(RECHECK_AT_KEY), now)
        except Exception as e:
            self.log.warning("cupid watch %s: cannot read when to look at candidates again (%s)", self.pair_id, e)
            rechecks.read_failed(now)

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
