"""The source watcher on a real MariaDB table: one event per advance, none while idle, marks that
survive a restart. (The end-to-end test runs it in Airflow's real triggerer.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cupid_airflow.core import watch as core_watch
from cupid_airflow.core.watch import RECHECK_AT_KEY, WATCH_MARKS_KEY, Observation, Pacer, Rechecks, advance
from cupid_airflow.triggers.watch import SourceWatchTrigger
from tests.pairs import SRC_TABLE, Pair, pair

__all__ = ["pair"]  # the fixture

POLL_MS = 500  # the watcher's floor (MIN_POLL_SECONDS)


class MemoryStateStore:
    """The two calls the trigger makes on Airflow's asset state store (``aget``/``aset``), kept in
    a dict: the triggerer injects the real one, which the end-to-end test exercises."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.data.get(key, default)))  # JSON round trip, like the real one

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))


class Watching:
    """A trigger running in its own event loop thread, as the triggerer runs it."""

    def __init__(self, trigger: SourceWatchTrigger) -> None:
        self.trigger = trigger
        self.events: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.task: Any = None

    def start(self) -> None:
        self.thread.start()

        async def pump() -> None:
            async for event in self.trigger.run():
                self.events.append(event.payload)

        self.task = asyncio.run_coroutine_threadsafe(pump(), self.loop)

    def wait(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            if self.task.done():
                self.task.result()  # raises what the trigger raised
            assert time.monotonic() < deadline, f"{len(self.events)} event(s) after {timeout} s, wanted {count}"
            time.sleep(0.05)
        return self.events

    def stored(self, store: MemoryStateStore, timeout: float = 15) -> dict[str, Any]:
        """The marks, once the trigger has stored them (its first poll adopts what it sees)."""
        deadline = time.monotonic() + timeout
        while WATCH_MARKS_KEY not in store.data:
            assert time.monotonic() < deadline, f"no marks stored after {timeout} s"
            time.sleep(0.05)
        return dict(store.data[WATCH_MARKS_KEY])

    def quiet_for(self, seconds: float) -> None:
        """No new event in ``seconds`` (several polls)."""
        before = len(self.events)
        time.sleep(seconds)
        assert self.events[before:] == [], "the watcher fired while nothing changed"

    def stop(self) -> None:
        self.task.cancel()
        time.sleep(0.2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@contextmanager
def watching(watched: Pair, store: MemoryStateStore) -> Iterator[Watching]:
    trigger = SourceWatchTrigger(config_file=str(watched.config_path), destination=0, pair_id=watched.dag_id)
    trigger.asset_state_store = store  # type: ignore[assignment]
    watch = Watching(trigger)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()


@pytest.fixture
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events and stores without the production pauses (10 s each), which test_pacing covers."""
    monkeypatch.setattr(core_watch, "MIN_EVENT_GAP_SECONDS", 0.0)
    monkeypatch.setattr(core_watch, "STORE_DELAY_SECONDS", 0.0)


@pytest.fixture
def watched(pair: Pair, at_once: None) -> Pair:
    pair.configure(
        src={
            "update": True,
            "updateColumn": "update_time",
            "insertIntervalMillisecond": POLL_MS,
            "updateIntervalMillisecond": POLL_MS,
        }
    )
    pair.add_source(("n1", "a", None, None, None, "2024-05-01 10:00:00"))
    return pair


def test_one_event_per_advance_and_none_while_idle(watched: Pair) -> None:
    store = MemoryStateStore()
    with watching(watched, store) as watch:
        # the first look adopts the source as it is: a new pair's first pass is its first scheduled run
        assert watch.stored(store)["max_id"] == 1
        watch.quiet_for(2.5)

        watched.add_source(("n2", "b", None, None, None, "2024-05-01 10:00:00"))
        second = watch.wait(1)[0]
        # n2 also joined the rows holding the newest update time: one event says both
        assert second["changes"] == ["new ids up to 2", "rows updated at 2024-05-01T10:00:00"]
        watch.quiet_for(2)

        watched.src.execute("UPDATE `user` SET name = 'c', update_time = '2024-05-01 11:00:00' WHERE number = 'n1'")
        assert watch.wait(2)[1]["changes"] == ["rows updated at 2024-05-01T11:00:00"]
        # another row stamped with the same second: the maximum stays, the count moves
        watched.src.execute("UPDATE `user` SET name = 'd', update_time = '2024-05-01 11:00:00' WHERE number = 'n2'")
        assert watch.wait(3)[2]["changes"] == ["rows updated at 2024-05-01T11:00:00"]
        watch.quiet_for(2)

        watched.src.execute("DELETE FROM `user` WHERE number = 'n2'")  # the newest id goes away
        watch.wait(4)  # the count at the newest update time changed
        watched.add_source(("n3", "e", None, None, None, "2024-05-01 09:00:00"))  # id 3: still new
        assert watch.wait(5)[4]["changes"] == ["new ids up to 3"]
    assert store.data[WATCH_MARKS_KEY]["max_id"] == 3


def test_marks_survive_a_restart(watched: Pair) -> None:
    store = MemoryStateStore()
    with watching(watched, store) as watch:
        marks = watch.stored(store)

    with watching(watched, store) as watch:  # the triggerer came back: nothing changed meanwhile
        watch.quiet_for(2.5)
    assert store.data[WATCH_MARKS_KEY] == marks

    watched.add_source(("n2", "b", None, None, None, "2024-05-01 09:00:00"))  # while nobody watches
    with watching(watched, store) as watch:
        (event,) = watch.wait(1)
        assert event["changes"] == ["new ids up to 2"]
        watch.quiet_for(2)


def test_an_unreachable_source_is_retried_without_a_secret_in_the_log(
    watched: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    config = json.loads(watched.config_path.read_text())
    config["src"]["dsn"] = "cupid:watch-s3cret-pw@tcp(127.0.0.1:9)/nowhere"
    watched.config_path.write_text(json.dumps(config))
    with caplog.at_level("WARNING"), watching(watched, MemoryStateStore()) as watch:
        time.sleep(2)
        assert not watch.task.done()  # still trying: a source outage does not end the watcher
        watch.quiet_for(0.5)
    failures = [r.getMessage() for r in caplog.records if "polling user failed" in r.getMessage()]
    assert failures, caplog.text
    assert "127.0.0.1:9" in failures[0] or "Can't connect" in failures[0]
    assert "watch-s3cret-pw" not in caplog.text


def test_destinations_of_one_source_share_a_poll(watched: Pair) -> None:
    config = json.loads(watched.config_path.read_text())
    config["src"]["dsn"] = "cupid:share-s3cret-pw@tcp(127.0.0.1:3306)/app"
    config["des"].append({**config["des"][0], "table": "user_copy"})
    watched.config_path.write_text(json.dumps(config))
    first, second = (
        SourceWatchTrigger(config_file=str(watched.config_path), destination=i, pair_id=f"{watched.dag_id}_{i}")
        for i in (0, 1)
    )
    key = first.shared_stream_key()
    assert key == second.shared_stream_key() is not None
    assert "share-s3cret-pw" not in repr(key)  # Airflow logs the key

    other = watched.config_path.with_name("other.json")
    config["src"]["dsn"] = "cupid:changed-pw@tcp(127.0.0.1:3306)/app"  # a new password: the same source
    other.write_text(json.dumps(config))
    assert SourceWatchTrigger(config_file=str(other), pair_id="cupid_other").shared_stream_key() == key
    config["src"]["table"] = "user_other"
    other.write_text(json.dumps(config))
    assert SourceWatchTrigger(config_file=str(other), pair_id="cupid_other2").shared_stream_key() != key


def test_advance_rules() -> None:
    marks, changes = advance(None, Observation(observed_ids=True, max_id=None))
    assert changes == [] and marks["max_id"] is None and marks["parts"] == ["ids"]  # an empty table
    marks, changes = advance(marks, Observation(observed_ids=True, max_id=None))
    assert changes == []
    marks, changes = advance(marks, Observation(observed_ids=True, max_id=5))
    assert changes == ["new ids up to 5"]
    # the update column seen for the first time (a pair that joined between two kinds of poll): adopted
    marks, changes = advance(marks, Observation(observed_updates=True, max_updated="x", rows_at_max=1))
    assert changes == [] and marks["max_updated"] == "x" and marks["max_id"] == 5
    marks, changes = advance(marks, Observation(observed_updates=True, max_updated="y", rows_at_max=1))
    assert changes == ["rows updated at y"] and marks["max_id"] == 5  # a part not polled keeps its mark
    marks, changes = advance(marks, Observation(observed_ids=True, max_id=2))  # truncated
    assert changes == [] and marks["max_id"] == 2
    assert advance(marks, Observation(observed_ids=True, max_id=3))[1] == ["new ids up to 3"]


def test_pacing() -> None:
    """A busy table fires once per gap, never loses the change it held back, and marks are stored
    only once the event they stand for is surely persisted, also while the table keeps changing."""
    gap, delay = core_watch.MIN_EVENT_GAP_SECONDS, core_watch.STORE_DELAY_SECONDS  # the real values
    assert gap == 3 and delay == 10
    pacer = Pacer(None)
    assert pacer.observe(Observation(observed_ids=True, max_id=1), now=-1) == []  # the first look adopts
    assert pacer.to_store(now=-1) == pacer.fired  # nothing fired: stored at once
    pacer.stored_as(pacer.fired)  # type: ignore[arg-type]
    assert pacer.observe(Observation(observed_ids=True, max_id=2), now=0) == ["new ids up to 2"]
    assert pacer.to_store(now=1) is None  # too soon after the event
    assert pacer.observe(Observation(observed_ids=True, max_id=3), now=2) == []  # held back
    assert pacer.observe(Observation(observed_ids=True, max_id=3), now=3.5) == ["new ids up to 3"]
    assert pacer.observe(Observation(observed_ids=True, max_id=4), now=7) == ["new ids up to 4"]
    assert pacer.to_store(now=9) is None
    stored = pacer.to_store(now=10)  # the first event's marks: the later ones are not surely saved yet
    assert stored is not None and stored["max_id"] == 2
    pacer.store_failed(now=10)
    assert pacer.to_store(now=30) is None  # the state store refused: not again every poll
    stored = pacer.to_store(now=71)
    assert stored is not None and stored["max_id"] == 4  # by now the newest event is old enough
    pacer.stored_as(stored)
    assert pacer.to_store(now=90) is None and pacer.unstored == []
    assert pacer.observe(Observation(observed_ids=True, max_id=4), now=100) == []  # idle: nothing

    restarted = Pacer(stored)  # a triggerer restart: the stored marks, nothing new
    assert restarted.observe(Observation(observed_ids=True, max_id=3), now=0) == []


def test_tables_on_one_server_share_its_connections(watched: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five watched tables on one server over one lane (one connection): each still fires for its
    own change, and a table that does not exist fails its own polls without breaking the others'."""
    from cupid_airflow.triggers import watch as trigger_watch

    monkeypatch.setattr(trigger_watch, "LANES_PER_SERVER", 1)
    config = json.loads(watched.config_path.read_text())
    names = [f"t{i}" for i in range(4)]
    for name in names:
        watched.src.execute(f"CREATE TABLE `{name}` LIKE `user`")
    triggers = []
    for name in [*names, "missing"]:
        path = watched.config_path.with_name(f"{name}.json")
        path.write_text(json.dumps({**config, "src": {**config["src"], "table": name}}))
        triggers.append(SourceWatchTrigger(config_file=str(path), pair_id=f"cupid_{name}"))
    watches = [Watching(trigger) for trigger in triggers]
    stores = [MemoryStateStore() for _ in triggers]
    for watch, store in zip(watches, stores, strict=True):
        watch.trigger.asset_state_store = store  # type: ignore[assignment]
        watch.start()

    def connections() -> list[int]:
        sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()"
        return sorted(row[0] for row in watched.src.execute(sql, (watched.src.name,)))

    try:
        for watch, store in zip(watches[:4], stores[:4], strict=True):
            watch.stored(store)  # every real table polled once
        first = connections()
        assert len(first) == 1  # one connection for the five tables (the test's own not counted)
        for name, watch in zip(names, watches[:4], strict=True):
            watched.src.execute(f"INSERT INTO `{name}` (number) VALUES ('x')")
            assert watch.wait(1)[0]["changes"][0] == "new ids up to 1"  # and the first update time
        time.sleep(1.5)  # the missing table's polls keep failing meanwhile
        assert connections() == first  # the same connection: a missing table did not reset it
        assert all(not watch.task.done() for watch in watches)
    finally:
        for watch in watches:
            watch.stop()


@pytest.mark.parametrize("dag_gone", [True, False], ids=["its-dag-gone", "its-dag-not-yet-gone"])
def test_a_shared_poll_follows_the_configs_still_watched(
    watched: Pair, mysql_db: Any, caplog: pytest.LogCaptureFixture, dag_gone: bool
) -> None:
    """Two config files watch one table through one shared poll, opened (as Airflow's triggerer
    does) with the arguments of the first to subscribe. That file is deleted, and its DAG goes
    (or has not gone yet: its trigger lives on until the next parse); the password is rotated in
    the other file and on the server, whose sessions are dropped: the poll logs in with the
    remaining file's new password, and its pair fires again."""
    from airflow.triggers.shared_stream import SharedStreamManager

    user, old, new = f"cw_{watched.src.name[-12:]}", "old-Pw-1x9", "new-Pw-7q2"
    admin = watched.src
    admin.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{old}'")
    admin.execute(f"GRANT SELECT ON `{admin.name}`.* TO '{user}'@'%'")
    config = json.loads(watched.config_path.read_text())

    def write(path: Any, password: str) -> None:
        dsn = f"{user}:{password}@tcp(127.0.0.1:3306)/{admin.name}"
        path.write_text(json.dumps({**config, "src": {**config["src"], "dsn": dsn}}))

    first, second = watched.config_path.with_name("first.json"), watched.config_path.with_name("second.json")
    write(first, old)
    write(second, old)
    triggers = {
        "cupid_first": SourceWatchTrigger(config_file=str(first), pair_id="cupid_first"),
        "cupid_second": SourceWatchTrigger(config_file=str(second), pair_id="cupid_second"),
    }
    stores = {pair_id: MemoryStateStore() for pair_id in triggers}
    events: dict[str, list[dict[str, Any]]] = {pair_id: [] for pair_id in triggers}

    async def scenario() -> None:
        manager = SharedStreamManager()
        key = triggers["cupid_first"].shared_stream_key()
        assert key == triggers["cupid_second"].shared_stream_key() and key is not None
        consumers = {}
        for trigger_id, (pair_id, trigger) in enumerate(triggers.items()):
            trigger.asset_state_store = stores[pair_id]  # type: ignore[assignment]

            async def consume(pair_id: str = pair_id, trigger_id: int = trigger_id) -> None:
                stream = manager.subscribe(trigger_id=trigger_id, trigger=triggers[pair_id], key=key)
                try:
                    async for event in triggers[pair_id].filter_shared_stream(stream):
                        events[pair_id].append(event.payload)
                finally:
                    await manager.unsubscribe(trigger_id, key)

            consumers[pair_id] = asyncio.create_task(consume())
        try:
            await _until(lambda: all(WATCH_MARKS_KEY in s.data for s in stores.values()), "both pairs' first poll")

            first.unlink()  # the file that opened the poll is deleted, and its DAG's trigger ends
            if dag_gone:
                consumers["cupid_first"].cancel()
                await asyncio.gather(consumers["cupid_first"], return_exceptions=True)
            caplog.clear()
            admin.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY '{new}'")
            write(second, new)
            for (session,) in admin.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)):
                admin.execute(f"KILL {int(session)}")  # the next poll reconnects

            watched.add_source(("n9", "new", None, None, None, "2024-05-01 10:00:00"))
            await _until(lambda: events["cupid_second"], "an event of the remaining pair", 20)
            assert events["cupid_second"][-1]["changes"][0] == "new ids up to 2"
        finally:
            for task in consumers.values():
                task.cancel()
            await asyncio.gather(*consumers.values(), return_exceptions=True)
            await manager.stop_all()

    try:
        with caplog.at_level("INFO", logger="cupid_airflow.triggers.watch"):
            asyncio.run(scenario())
        lines = [r.getMessage() for r in caplog.records if r.name == "cupid_airflow.triggers.watch"]
        first_failed = [line for line in lines if "cupid_first" in line and "failed" in line]
        assert len(first_failed) <= (0 if dag_gone else 1), lines  # the stale password fails once, at most
        assert old not in caplog.text and new not in caplog.text
    finally:
        admin.execute(f"DROP USER IF EXISTS '{user}'@'%'")


async def _until(check: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        await asyncio.sleep(0.05)


def test_tables_in_many_databases_of_one_server_share_its_connections(
    watched: Pair, mysql_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher's connections are per server and login, not per DSN: pairs watching tables in
    three databases of one server poll over one connection (one lane), each its own table."""
    from cupid_airflow.triggers import watch as trigger_watch

    monkeypatch.setattr(trigger_watch, "LANES_PER_SERVER", 1)
    config = json.loads(watched.config_path.read_text())
    databases = [mysql_db(f"w{i}") for i in range(3)]
    watches, stores = [], []
    for i, db in enumerate(databases):
        db.execute(SRC_TABLE)
        path = watched.config_path.with_name(f"db{i}.json")
        path.write_text(json.dumps({**config, "src": {**config["src"], "dsn": db.dsn}}))
        watch = Watching(SourceWatchTrigger(config_file=str(path), pair_id=f"cupid_db{i}"))
        store = MemoryStateStore()
        watch.trigger.asset_state_store = store  # type: ignore[assignment]
        watches.append(watch)
        stores.append(store)
        watch.start()
    try:
        for watch, store in zip(watches, stores, strict=True):
            watch.stored(store)
        ours = [db.execute("SELECT CONNECTION_ID()")[0][0] for db in [watched.src, watched.des, *databases]]
        names = [db.name for db in databases]
        sql = (
            f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB IN ({', '.join(['%s'] * len(names))}) "
            f"AND ID NOT IN ({', '.join(['%s'] * len(ours))})"
        )
        assert watched.src.execute(sql, [*names, *ours])[0][0] == 1  # one connection, in one of the databases
        databases[1].execute("INSERT INTO `user` (number) VALUES ('x')")
        assert watches[1].wait(1)[0]["changes"][0] == "new ids up to 1"
        assert watches[0].events == [] and watches[2].events == []
    finally:
        for watch in watches:
            watch.stop()


def test_the_watcher_starts_a_run_when_candidates_are_due(watched: Pair) -> None:
    """A run the watcher started leaves candidates: its scan stores when to look at them again,
    and the watcher, which reads that after each run it starts, starts a run then."""
    store = MemoryStateStore()
    with watching(watched, store) as watch:
        watch.stored(store)  # adopted the source: no event
        watched.add_source(("n2", "b", None, None, None, "2024-05-01 10:00:00"))
        watch.wait(1)  # a run for the change; its scan found candidates and says when to look again
        store.data[RECHECK_AT_KEY] = time.time() + 5
        (_, event) = watch.wait(2, timeout=15)
        assert event["changes"] == ["candidates due to be looked at again"]
        store.data.pop(RECHECK_AT_KEY)  # the run it started looked; nothing waits any more
        watch.quiet_for(4)


def test_rechecks_read_after_each_run_and_fire_once() -> None:
    rechecks = Rechecks()
    assert rechecks.should_read(0.0)  # at start
    rechecks.read(None, 0.0)
    assert not rechecks.should_read(59.0) and rechecks.should_read(60.0)  # idle: every minute
    rechecks.run_started(100.0)  # a run for changes: its scan may leave candidates
    for now in (102.0, 104.0, 106.0):  # at each poll until the run's scan stores a time
        assert rechecks.should_read(now) and not rechecks.should_read(now - 1)
        rechecks.read(None, now)
        assert rechecks.at is None
    rechecks.read(140.0, 108.0)  # stored: read again in a minute, the look fires once due
    assert not rechecks.should_read(160.0)
    assert not rechecks.due(139.0) and rechecks.due(140.0)
    rechecks.run_started(140.0)
    assert not rechecks.due(141.0)  # until the run's scan stores the next time
    rechecks.read(140.0, 143.0)  # read before that scan stored it: the old time is not due again
    assert not rechecks.due(143.0) and rechecks.should_read(145.0)
    rechecks.read(140.0, 259.0)
    assert not rechecks.due(259.0)
    rechecks.read(140.0, 261.0)  # two minutes on, still not replaced: that scan died, another run looks
    assert rechecks.due(261.0)
    rechecks.run_started(261.0)
    rechecks.read("garbled", 263.0)
    assert rechecks.at is None and rechecks.should_read(265.0)
    rechecks.read_failed(265.0)
    assert not rechecks.should_read(270.0) and rechecks.should_read(275.0)
