"""Fast unit tests of the pure core: partitions, chunk sizing, mismatch tracking, key ranges, the
segment walk, Retry-After, the delivery loop, the state codec. No database, no Airflow: the
real-database tests beside these cover the same code against MariaDB, PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import pytest

from cupid_airflow.core.codec import StateError, decode_value, encode_value
from cupid_airflow.core.compare import PairComparer
from cupid_airflow.core.delivered import DeliveredBits
from cupid_airflow.core.delivery import Answer, Delivery, DeliveryPolicy, SendFailed, deliver_all, retry_after_seconds
from cupid_airflow.core.errors import PermanentError, TimeColumnError, UnsupportedValueError
from cupid_airflow.core.events import Event, EventDigest, EventSpool, event_chunk_key, read_event_output
from cupid_airflow.core.partitions import (
    id_partition,
    id_partitions,
    merge_to_limit,
    read_partition,
    time_kind,
    window_partitions,
)
from cupid_airflow.core.positions import (
    read_insert_cursor,
    read_update_mark,
    read_update_state,
    write_insert_cursor,
    write_update_state,
)
from cupid_airflow.core.reconcile import ChunkSizer, MismatchTracker, SegmentWalk, settled
from cupid_airflow.core.reconcile_progress import Segment, new_progress, read_progress, write_progress
from cupid_airflow.core.threads import prefetched
from cupid_airflow.dialects import permanent_reason
from cupid_airflow.hooks.table import key_range

# ---------------------------------------------------------------------------- partitions


class SortedColumn:
    """A column's values in index order: what ``ORDER BY c LIMIT 1 OFFSET n`` sees."""

    def __init__(self, values: list[Any]) -> None:
        self.values = sorted(values)

    def nth_after(self, column: str, after: Any, before: Any, offset: int) -> Any:
        start = 0 if after is None else bisect.bisect_right(self.values, after)
        end = len(self.values) if before is None else bisect.bisect_left(self.values, before)
        return self.values[start + offset] if start + offset < end else None

    def nth_in_window(self, column: str, since: Any, until: Any, offset: int) -> Any:
        start, end = bisect.bisect_left(self.values, since), bisect.bisect_left(self.values, until)
        return self.values[start + offset] if start + offset < end else None


def covered_ids(parts: list[Any], ids: list[int]) -> list[int]:
    return [i for p in parts for i in ids if p["after"] < i <= p["upto"]]


def test_id_partitions_cover_the_range_once_whatever_the_gaps() -> None:
    ids = [*range(1, 1001), *range(5_000_000, 5_000_500)]  # a gap of millions of ids costs nothing
    parts = id_partitions(SortedColumn(ids), 0, 5_000_499, 300, "id")
    assert covered_ids(parts, ids) == ids  # each id in exactly one partition
    assert [p["upto"] for p in parts][:3] == [300, 600, 900]
    assert all(p["version"] == 1 and p["kind"] == "ids" for p in parts)


def test_id_partitions_of_an_empty_claim() -> None:
    assert id_partitions(SortedColumn([1, 2, 3]), 3, 3, 100, "id") == []


def test_merge_to_limit_keeps_every_row_in_fewer_parts() -> None:
    parts = [id_partition(i, i + 1) for i in range(1001)]
    merged = merge_to_limit(parts, 500)
    assert len(merged) <= 500
    assert merged[0]["after"] == 0 and merged[-1]["upto"] == 1001
    assert all(a["upto"] == b["after"] for a, b in itertools.pairwise(merged))


def test_window_partitions_never_split_rows_sharing_a_timestamp() -> None:
    t0 = datetime(2026, 1, 1)
    stamps = [t0] * 50 + [t0 + timedelta(seconds=s) for s in range(1, 100)]
    parts = window_partitions(
        SortedColumn(stamps), "u", "datetime", t0 - timedelta(hours=1), t0 + timedelta(days=1), 10
    )
    bounds = [(decode_value(p["since"]), decode_value(p["until"])) for p in parts]
    assert bounds[0][0] == t0 - timedelta(hours=1) and bounds[-1][1] == t0 + timedelta(days=1)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous
    assert (
        sum(1 for s in stamps if bounds[0][0] <= s < bounds[0][1]) == 50
    )  # every row of t0 in one part, whatever the chunk
    assert (
        window_partitions(SortedColumn(stamps), "u", "datetime", t0 + timedelta(days=2), t0 + timedelta(days=3), 10)
        == []
    )


def test_time_kind_rejects_what_cannot_be_range_scanned() -> None:
    assert time_kind(datetime(2026, 1, 1)) == "datetime"
    assert time_kind(1_700_000_000) == "epoch_s" and time_kind(1_700_000_000_000) == "epoch_ms"
    with pytest.raises(TimeColumnError, match="expected DATETIME/TIMESTAMP"):
        time_kind(3.5)


# ---------------------------------------------------------------------------- reconcile


def test_chunk_sizer_steers_to_the_target_but_moves_at_most_4x() -> None:
    sizer = ChunkSizer(target=1.0)
    sizer.observe(10_000, 0.01)  # 1,000,000 rows/s: wants 1,000,000, capped at 4x
    assert sizer.rows == 40_000
    sizer.observe(40_000, 0.01)
    assert sizer.rows == 160_000
    sizer.observe(160_000, 0.01)
    assert sizer.rows == 200_000  # the maximum
    sizer.observe(200_000, 100.0)  # one very slow query: a quarter, not a collapse
    assert sizer.rows == 50_000
    for _ in range(10):
        sizer.observe(sizer.rows, 100.0)
    assert sizer.rows == 1_000  # the minimum
    sizer.observe(0, 1.0)
    assert sizer.rows == 1_000


def test_mismatch_tracker_skips_checksums_when_most_chunks_differ_and_probes_again() -> None:
    tracker = MismatchTracker()
    decisions = []
    for _ in range(3):
        decisions.append(tracker.use_checksum())
        tracker.record(True)
    assert decisions == [True, True, True]
    skipped = [tracker.use_checksum() for _ in range(10)]
    assert skipped == [False, False, False, False, True] * 2  # a probe every 5th chunk
    for _ in range(3):
        tracker.record(False)
    assert tracker.use_checksum()  # differences thinned out: checksums again


def test_key_range_is_half_open_and_never_matches_null_keys() -> None:
    assert key_range("`k`", "%s", 1, 9) == ("`k` >= %s AND `k` < %s", [1, 9])
    assert key_range("`k`", "%s", None, 9) == ("`k` < %s", [9])
    assert key_range("`k`", "%s", 1, None) == ("`k` >= %s", [1])
    assert key_range("`k`", "?", None, None) == ("`k` IS NOT NULL", [])


class ListSide:
    """A table as a sorted list of rows, with a checksum in Python (or none, as SQLite)."""

    def __init__(self, rows: list[tuple[Any, ...]], key_at: int, hashes: bool = True) -> None:
        self.data = sorted(rows, key=lambda r: r[key_at])
        self.keys = [r[key_at] for r in self.data]
        self.key_at, self.hashes = key_at, hashes
        self.checksums = self.reads = 0

    thread_safe = True

    def _slice(self, lower: Any, upper: Any) -> list[tuple[Any, ...]]:
        start = 0 if lower is None else bisect.bisect_left(self.keys, lower)
        end = len(self.keys) if upper is None else bisect.bisect_left(self.keys, upper)
        return self.data[start:end]

    def nth_key(self, after: Any, before: Any, offset: int) -> Any:
        start = 0 if after is None else bisect.bisect_right(self.keys, after)
        end = len(self.keys) if before is None else bisect.bisect_left(self.keys, before)
        return self.keys[start + offset] if start + offset < end else None

    def checksum(self, lower: Any, upper: Any) -> tuple[int, int] | None:
        if not self.hashes:
            return None
        self.checksums += 1
        rows = [r[self.key_at :] for r in self._slice(lower, upper)]  # the key and the columns, not the id
        digest = sum(int.from_bytes(hashlib.sha256(repr(r).encode()).digest()[:8], "big") for r in rows)
        return len(rows), digest % 2**64

    def rows(self, lower: Any, upper: Any) -> list[tuple[Any, ...]]:
        self.reads += 1
        return self._slice(lower, upper)


def walk_pair(n: int, hashes: bool = True) -> tuple[ListSide, ListSide, PairComparer]:
    src = [(i, f"k{i:05d}", f"name {i}") for i in range(1, n + 1)]
    des = [(f"k{i:05d}", f"name {i}") for i in range(1, n + 1) if i != 500]  # 500 missing
    des = [(k, "stale" if k == "k12345" else v) for k, v in des]  # 12345 different
    des += [("k99999", "only in the copy")]  # gone from the source
    comparer = PairComparer("p", "user", "number", ("name",), ("name",))
    return ListSide(src, 1, hashes), ListSide(des, 0, hashes), comparer


@pytest.mark.parametrize("hashes", [True, False], ids=["checksums", "no-hash-function"])
def test_segment_walk_finds_every_kind_of_difference_and_reads_little(hashes: bool) -> None:
    source, target, comparer = walk_pair(20_000, hashes)
    walk = SegmentWalk(source, target, comparer, target_seconds=1e-9)  # minimum-size chunks
    progress = walk.run(new_progress(Segment(lower=None, upper=None)))
    found = sorted((e["type"], e["byValue"]) for e in progress["events"])
    assert found == [(1, "k00500"), (2, "k12345"), (3, "k99999")]
    assert progress["done"] and progress["stats"]["rows"] == 20_000
    if hashes:  # the three chunks that differ, and one read without a checksum after two differing in a row
        assert source.reads == progress["stats"]["read"] == 4 and progress["stats"]["chunks"] == 10


def test_segment_walk_resumes_from_saved_progress_without_losing_or_doubling() -> None:
    source, target, comparer = walk_pair(20_000)
    saves: list[Any] = []
    walk = SegmentWalk(source, target, comparer, 1e-9, save=lambda p: saves.append(dict(p, events=list(p["events"]))))
    walk.save_every = 0
    full = walk.run(new_progress(Segment(lower=None, upper=None)))
    middle = next(s for s in saves if s["events"] and not s["done"])
    resumed = SegmentWalk(source, target, comparer, 1e-9).run(dict(middle, stats=dict(middle["stats"])))  # type: ignore[arg-type]
    assert sorted(e["eventId"] for e in resumed["events"]) == sorted(e["eventId"] for e in full["events"])


def test_settled_keeps_only_what_is_still_the_same_kind_and_not_recent() -> None:
    def event(kind: int, key: str) -> Event:
        return {"type": kind, "srcColumn": None, "eventId": key + str(kind), "byValue": key}

    before = [event(2, "a"), event(2, "b"), event(3, "c"), event(2, "d")]
    still = [event(2, "a"), event(2, "b"), event(1, "c"), event(2, "e")]  # c changed kind, e is new
    assert [e["byValue"] for e in settled(before, still, recent={"b"})] == ["a"]


# ---------------------------------------------------------------------------- delivery


def test_retry_after_seconds_reads_delta_seconds_and_http_dates() -> None:
    now = time.time()
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 7 ") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)  # IMF-fixdate
    assert retry_after_seconds(later, now=now) == pytest.approx(30, abs=1)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0  # the past means now
    assert retry_after_seconds("Sunday, 06-Nov-94 08:49:37 GMT", now=now) == 0.0  # RFC 850 form


def test_policy_judges_answers() -> None:
    policy = DeliveryPolicy()
    assert policy.judge(Answer(204)) == Delivery("delivered")
    assert policy.judge(Answer(410, "bye")).outcome == "gone"  # type: ignore[union-attr]
    assert policy.judge(Answer(429, "", "2")) == 2.0
    assert policy.judge(Answer(503, "", "3600")) == Delivery("failed", "HTTP 503, Retry-After 3600 s: ")
    assert policy.judge(Answer(500, "oops")) == Delivery("failed", "HTTP 500: oops")
    assert policy.judge(Answer(429, "")) == Delivery("failed", "HTTP 429: ")  # no Retry-After: the task retry


def events(n: int) -> list[Event]:
    return [{"type": 1, "srcColumn": {"id": str(i)}, "eventId": f"e{i}"} for i in range(n)]


def test_deliver_all_keeps_concurrency_in_flight_and_checkpoints() -> None:
    in_flight = peak = 0
    checkpoints: list[int] = []

    async def send(event: Event) -> Answer:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return Answer(200)

    heard: list[str] = []

    def on_outcome(event: Event, result: Delivery) -> None:
        assert result.outcome == "delivered"
        heard.append(event["eventId"])

    def checkpoint() -> None:
        checkpoints.append(len(heard))

    report = asyncio.run(deliver_all(iter(events(100)), send, 4, on_outcome=on_outcome, checkpoint=checkpoint,
                                     checkpoint_every=0))  # fmt: skip
    assert report.delivered == 100 and sorted(heard) == sorted(e["eventId"] for e in events(100))
    assert peak == 4 and checkpoints == list(range(1, 101))


def test_deliver_all_waits_out_a_short_retry_after() -> None:
    seen: dict[str, int] = {}

    async def send(event: Event) -> Answer:
        seen[event["eventId"]] = seen.get(event["eventId"], 0) + 1
        return Answer(429, "", "0") if seen[event["eventId"]] == 1 else Answer(200)

    report = asyncio.run(deliver_all(events(5), send, 2))
    assert report.delivered == 5 and set(seen.values()) == {2}


def test_circuit_breaker_skips_the_rest_after_connection_failures_in_a_row() -> None:
    sent = 0

    async def send(event: Event) -> Answer:
        nonlocal sent
        sent += 1
        raise SendFailed("cannot connect: ClientConnectorError")

    report = asyncio.run(deliver_all(events(100), send, 1, DeliveryPolicy(circuit_breaker=10)))
    assert sent == 10 and report.receiver_down
    assert report.failed == 100 and report.undelivered == 100  # none dropped: all left for the retry
    assert len(report.problems) == 20  # the first few, for the log: a report holds no other event
    assert report.reasons == {"cannot connect", "skipped"}


def test_answers_in_between_reset_the_breaker() -> None:
    async def send(event: Event) -> Answer:
        if int(event["eventId"][1:]) % 5 == 4:
            return Answer(500)
        raise SendFailed("timeout")

    report = asyncio.run(deliver_all(events(100), send, 1))
    assert not report.receiver_down


# ---------------------------------------------------------------------------- state


@pytest.mark.parametrize(
    "value",
    [None, 7, "k1", 2.5, Decimal("10.50"), datetime(2026, 1, 2, 3, 4, 5, 6), date(2026, 1, 2), clock(3, 4, 5),
     timedelta(hours=-1, microseconds=5), bytes(range(16))],
)  # fmt: skip
def test_values_round_trip_through_json_with_their_type(value: Any) -> None:
    import json

    back = decode_value(json.loads(json.dumps(encode_value(value))))
    assert back == value and type(back) is type(value)


def test_unsupported_values_fail_for_good() -> None:
    with pytest.raises(UnsupportedValueError, match="a dict value cannot be used as a key") as info:
        encode_value({"a": 1})  # a PostgreSQL json key
    assert isinstance(info.value, PermanentError)
    with pytest.raises(StateError, match="not an encoded value"):
        decode_value({"nope": 1})


class MemoryStore:
    def __init__(self, **data: Any) -> None:
        self.data = dict(data)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_scan_state_reads_its_unversioned_form_and_refuses_a_newer_one() -> None:
    store = MemoryStore(**{"cupid.d.insert_cursor": {"cursor": 5, "claims": {"r1": [0, 5]}}})
    assert read_insert_cursor(store, "d") == {
        "version": 1, "cursor": 5, "claims": {"r1": [0, 5]}, "open": {}, "gaps": []
    }  # fmt: skip
    assert read_insert_cursor(MemoryStore(), "d")["cursor"] is None
    write_insert_cursor(store, "d", {"version": 1, "cursor": 9, "claims": {}})
    assert store.data["cupid.d.insert_cursor"]["version"] == 1
    store.data["cupid.d.insert_cursor"]["version"] = 2
    with pytest.raises(StateError, match="version 2"):
        read_insert_cursor(store, "d")

    legacy = MemoryStore(**{"cupid.d.update_hwm": "2026-01-01T00:00:00+00:00"})
    assert read_update_mark(legacy, "d") == datetime(2026, 1, 1, tzinfo=UTC)
    state = read_update_state(legacy, "d")
    state["until"] = datetime(2026, 2, 1, tzinfo=UTC).isoformat()
    write_update_state(legacy, "d", state)
    assert legacy.data["cupid.d.update_hwm"] == {"version": 1, "until": "2026-02-01T00:00:00+00:00", "open": {}}


def test_partitions_and_progress_and_delivered_ids() -> None:
    old_window = {"kind": "window", "column": "u", "vtype": "datetime", "since": "2026-01-01T00:00:00",
                  "until": "2026-01-02T00:00:00", "exclude_ids": [1, 9]}  # fmt: skip
    part = read_partition(old_window)
    assert decode_value(part["since"]) == datetime(2026, 1, 1) and part.get("exclude_ids") == [1, 9]
    with pytest.raises(StateError, match="not a partition"):
        read_partition({"kind": "rows"})

    store = MemoryStore()
    segment = Segment(lower=encode_value(Decimal("1.5")), upper=None)
    progress = new_progress(segment)
    write_progress(store, progress)
    assert read_progress(store, segment) == progress
    assert read_progress(store, Segment(lower=None, upper=None)) is None  # another segment's pass

    legacy = DeliveredBits.read(MemoryStore(delivered_event_ids=["e1"]), "any", 2)  # the unversioned list of ids
    assert [legacy.done(i, e) for i, e in enumerate(events(2))] == [False, True]


def test_delivered_ids_stay_small_and_never_misread() -> None:
    import json

    many = events(100_000)
    store = MemoryStore()
    digest = EventDigest.of(many)
    bits = DeliveredBits.read(store, digest, len(many))
    for position in range(0, len(many), 3):
        bits.mark(position)
    bits.write(store)
    again = DeliveredBits.read(store, digest, len(many))
    assert [i for i, e in enumerate(many) if again.done(i, e)] == list(range(0, len(many), 3))
    assert again.delivered() == 33_334
    assert len(json.dumps(store.data)) < 20_000  # 17 KB for 100,000 events, rewritten every second
    other = DeliveredBits.read(store, EventDigest.of(many[:-1]), len(many) - 1)
    assert other.delivered() == 0  # another event list: nothing counts as delivered


def test_event_spool_keeps_small_outputs_inline_and_chunks_large_ones() -> None:
    pushed: dict[str, list[Event]] = {}
    small = EventSpool(pushed.__setitem__, "compare", 2, chunk=10)
    small.add(events(10))
    assert small.finish() == events(10) and pushed == {}  # up to a chunk: the plain list, as before

    spool = EventSpool(pushed.__setitem__, "compare", 2, chunk=10)
    for start in range(0, 25, 5):  # events come a batch at a time
        spool.add(events(25)[start : start + 5])
    manifest = spool.finish()
    assert manifest == {
        "version": 1, "task_id": "compare", "map_index": 2, "chunks": 3, "count": 25, "types": {"1": 25},
        "digest": EventDigest.of(events(25)),
    }  # fmt: skip
    assert [len(pushed[event_chunk_key(i)]) for i in range(3)] == [10, 10, 5]
    assert [e for i in range(3) for e in pushed[event_chunk_key(i)]] == events(25)
    assert read_event_output(manifest) == manifest and read_event_output(None) == []
    with pytest.raises(StateError, match="event chunks"):
        read_event_output({**manifest, "version": 99})


# ---------------------------------------------------------------------------- errors and threads


def test_permanent_reasons_are_recognised_by_driver() -> None:
    import sqlite3

    import MySQLdb

    assert "1054" in (permanent_reason(MySQLdb.OperationalError(1054, "Unknown column 'x'")) or "")
    assert permanent_reason(MySQLdb.OperationalError(2013, "Lost connection to MySQL server")) is None
    assert permanent_reason(MySQLdb.OperationalError(1045, "Access denied for user 'root'")) is not None
    assert permanent_reason(MySQLdb.OperationalError(2003, "Can't connect to MySQL server")) is None
    assert permanent_reason(sqlite3.OperationalError("no such column: x")) is not None
    assert permanent_reason(sqlite3.OperationalError("database is locked")) is None
    assert permanent_reason(TimeColumnError("bad format")) == "bad format"
    assert permanent_reason(ConnectionError("reset")) is None


def test_prefetched_stops_its_reader_before_the_block_ends() -> None:
    started = threading.Event()

    def endless() -> Iterator[int]:
        started.set()
        n = 0
        while True:
            n += 1
            yield n

    with pytest.raises(RuntimeError), prefetched(endless()) as items:
        assert next(items) == 1
        raise RuntimeError("the consumer failed")
    assert started.is_set()
    assert not [t for t in threading.enumerate() if t.name == "cupid-prefetch"]  # the reader is gone


# ---------------------------------------------------------------------------- claims


def test_take_over_settles_succeeded_runs_and_inherits_the_rest() -> None:
    from cupid_airflow.core.claims import take_over

    open_runs = {"r1": [[0, 10]], "r2": [[10, 20]], "r3": [[20, 30]], "r4": [[30, 40]]}
    outcome = take_over(open_runs, "r5", {"r1": True, "r2": False, "r4": None})  # r3: gone, no answer
    assert "r1" not in outcome.open and [0, 10] not in outcome.inherited  # r1 settled: its range dropped
    assert outcome.inherited == [[10, 20], [20, 30]]
    assert outcome.open == {"r4": [[30, 40]], "r5": [[10, 20], [20, 30]]}  # a running run keeps its own

    retried = take_over(outcome.open, "r5", {"r4": None})  # the same run's scan, retried
    assert retried.inherited == [] and retried.open == outcome.open


def test_settle_gaps_compares_where_rows_appeared_and_watches_the_rest() -> None:
    from cupid_airflow.core.claims import settle_gaps

    gaps = [[5, 5, 100.0], [10, 20, 100.0], [30, 31, 0.0]]
    compare, watched, expired = settle_gaps(gaps, present=[5, 12, 13], now=150.0, settle_seconds=60)
    assert compare == [[4, 5], [9, 20]]  # the late rows' ranges, compared as ids after < id <= upto
    assert watched == [[10, 11, 100.0], [14, 20, 100.0]]  # still missing, still watched
    assert expired == 1  # [30, 31] was first seen 150 s ago: forgotten


def test_cap_gaps_keeps_the_highest() -> None:
    from cupid_airflow.core.claims import cap_gaps

    gaps = [[i, i, 0.0] for i in range(10, 0, -1)]
    kept, dropped = cap_gaps(gaps, 3)
    assert [g[0] for g in kept] == [8, 9, 10] and dropped == 7


def test_a_hand_edited_cursor_fails_with_what_to_do() -> None:
    for broken in ("not json", {"cursor": "ten"}, {"cursor": 5, "claims": {"r1": 7}}):
        with pytest.raises(StateError, match=r"Variable cupid.d.insert_cursor is not an insert cursor .*delete it"):
            read_insert_cursor(MemoryStore(**{"cupid.d.insert_cursor": broken}), "d")
    with pytest.raises(StateError, match=r"Variable cupid.d.update_hwm is not an update high-water mark"):
        read_update_mark(MemoryStore(**{"cupid.d.update_hwm": "yesterday"}), "d")


def test_windows_across_a_clock_change_cover_the_repeated_hour() -> None:
    from cupid_airflow.core.partitions import ColumnTime
    from cupid_airflow.timeformat import parse_time_format

    text = ColumnTime("text", "America/New_York", parse_time_format("Y-m-d H:i:s"))
    at = lambda h, m: datetime(2026, 11, 1, h, m, tzinfo=UTC)  # noqa: E731
    # 05:30Z is 01:30 EDT and 06:30Z is 01:30 EST: unwidened, this window would be empty in text.
    low, high = text.window(at(5, 30), at(6, 30))
    assert low <= "2026-11-01 01:00:00" and high >= "2026-11-01 01:59:59"
    assert text.window(at(3, 0), at(4, 0)) == ("2026-10-31 23:00:00", "2026-11-01 00:00:00")  # no change inside
    epoch = ColumnTime("epoch_s", "America/New_York", parse_time_format("Y-m-d H:i:s"))
    assert epoch.window(at(5, 30), at(6, 30)) == (int(at(5, 30).timestamp()), int(at(6, 30).timestamp()))


def test_labels_name_what_a_mapped_task_reads() -> None:
    from datetime import datetime

    from cupid_airflow.core.events import carried_events
    from cupid_airflow.core.labels import partition_label, segment_label
    from cupid_airflow.core.partitions import id_partition, window_partition

    assert partition_label(id_partition(200_000, 400_000)) == "ids 200,001..400,000"
    window = window_partition("update_time", "datetime", datetime(2026, 11, 28, 10), datetime(2026, 11, 28, 11))
    assert partition_label(window) == "update_time 2026-11-28T10:00:00..2026-11-28T11:00:00"
    events: Any = [{"type": 1, "srcColumn": {}, "eventId": "e1"}] * 3
    assert partition_label(carried_events(events)) == "3 carried events"
    assert segment_label("number", {"lower": None, "upper": "n5000"}) == "number ..n5000"
    assert len(segment_label("x" * 300, {"lower": 1, "upper": 2})) == 120  # Airflow keeps 250 characters
