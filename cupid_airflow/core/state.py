"""Every state cupid keeps or hands between tasks, defined once: its shape, its version, and the
one codec for the database values inside it.

Where each lives (the stores themselves are Airflow's; operators adapt them to :class:`Store`):

=====================  ==========================================  ===============================
state                  store, key                                  written by
=====================  ==========================================  ===============================
:class:`InsertCursor`  Variable ``cupid.<dag_id>.insert_cursor``   ``scan``
:class:`UpdateMark`    Variable ``cupid.<dag_id>.update_hwm``      ``scan``
:class:`IdPartition`,  XCom of ``scan``                            ``scan`` -> ``compare``
:class:`WindowPartition`
:class:`CarriedEvents`  XCom of ``scan`` (an inline run's leftovers)  ``scan`` -> ``compare`` -> ``callback``
:class:`Event`         XCom of compare/reconcile                   -> ``callback``; the POST body
:class:`EventChunks`   the same, past 10,000 events: XCom chunks   -> ``callback``, a chunk at a time
:class:`Segment`       XCom of ``plan``                            -> ``reconcile``
:class:`ReconcileProgress`  task state store ``reconcile_progress``  ``reconcile`` (resume)
:class:`DeliveredIds`  task state store ``delivered_event_ids``    ``callback`` (resume)
:class:`Tally`         XCom ``cupid_tally`` of every task           each task -> run note, cupid view,
                                                                    metrics, lineage
=====================  ==========================================  ===============================

Each persisted shape carries ``version``; readers accept the current version and the unversioned
shape written before versions existed, and reject anything newer with an error that says so
(a downgrade must not misread a newer format). Events carry no version: their body is the
callback contract, which only ever gains keys.

Values (ids, keys, window bounds) go through :func:`encode_value`/:func:`decode_value`, so a
DECIMAL, DATETIME, DATE or binary key comes back as the type the database compares it with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time as clock
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, NotRequired, Protocol, TypedDict, cast

from cupid_airflow.core.errors import UnsupportedValueError

__all__ = [
    "DECODING_ERRORS",
    "DELIVERED_KEY",
    "EVENT_CHUNK",
    "LABEL_MAX_LEN",
    "PROGRESS_KEY",
    "STATE_VERSION",
    "TALLY_KEY",
    "TALLY_TASKS",
    "TALLY_TYPES",
    "WATCH_MARKS_KEY",
    "WATCH_MARKS_VERSION",
    "CarriedEvents",
    "DeliveredBits",
    "DeliveredIds",
    "Event",
    "EventChunks",
    "EventDigest",
    "EventSpool",
    "IdPartition",
    "InsertCursor",
    "Partition",
    "ReconcileProgress",
    "ReconcileStats",
    "Segment",
    "StateError",
    "Store",
    "Tally",
    "UpdateMark",
    "WatchMarks",
    "WindowPartition",
    "decode_value",
    "decoding",
    "encode_value",
    "event_chunk_key",
    "event_types",
    "insert_cursor_key",
    "partition_label",
    "read_event_output",
    "read_tally",
    "read_watch_marks",
    "segment_label",
    "update_mark_key",
    "watch_marks_value",
]

STATE_VERSION = 1
#: task state store keys (one task instance's own store).
PROGRESS_KEY = "reconcile_progress"
DELIVERED_KEY = "delivered_event_ids"


class StateError(ValueError):
    """A stored state this version of cupid cannot read."""


class Store(Protocol):
    """What cupid needs of a key-value store: Airflow's task state store has this shape, and
    operators adapt Variables to it."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


# ---------------------------------------------------------------------------- values


def encode_value(value: Any) -> Any:
    """A database value as JSON that :func:`decode_value` turns back into the same type.

    ``int``, ``str``, ``float`` and ``None`` stay as they are (readable in XCom and logs); the
    types JSON has no word for are tagged: ``{"decimal": "10.50"}``, ``{"datetime": "..."}``,
    ``{"date": "..."}``, ``{"time": "..."}``, ``{"hex": "..."}`` (binary keys such as UUIDs).
    """
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, time):
        return {"time": value.isoformat()}
    if isinstance(value, timedelta):  # MySQL TIME columns read as timedelta
        return {"seconds": str(Decimal(value.days * 86400 + value.seconds) + Decimal(value.microseconds) / 10**6)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"hex": bytes(value).hex()}
    raise UnsupportedValueError(
        f"a {type(value).__name__} value cannot be used as a key or boundary; expected a number, string, "
        "DECIMAL, DATE/DATETIME/TIME or binary column"
    )


_DECODERS: dict[str, Any] = {
    "decimal": Decimal,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "seconds": lambda s: timedelta(seconds=float(Decimal(s))),
    "hex": bytes.fromhex,
}


def decode_value(value: Any) -> Any:
    """The database value :func:`encode_value` wrote."""
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in _DECODERS:
            raise StateError(f"{value!r} is not an encoded value; expected one of the tags {sorted(_DECODERS)}")
        tag, text = next(iter(value.items()))
        with decoding(f"an encoded {tag} value"):
            return _DECODERS[tag](text)
    return value


#: What reading a hand-edited or foreign value can raise: a wrong type, an unparsable text, a
#: number too large for its type (``1e999`` as an id is infinity), a missing key.
DECODING_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError, AttributeError)


@contextmanager
def decoding(what: str, expected: str = "") -> Iterator[None]:
    """Turns any error of reading a stored value into the :class:`StateError` callers handle, with
    what was being read and what was expected (never the value itself: it may be anything)."""
    try:
        yield
    except StateError:
        raise
    except DECODING_ERRORS as e:
        raise StateError(
            f"{what} cannot be read ({type(e).__name__}: {e}){'; ' + expected if expected else ''}"
        ) from None


def _check_version(kind: str, data: Mapping[str, Any]) -> None:
    version = data.get("version", STATE_VERSION)
    if version != STATE_VERSION:
        raise StateError(
            f"{kind} has version {version!r}; this cupid-airflow reads version {STATE_VERSION} "
            "(was it written by a newer release?)"
        )


# ---------------------------------------------------------------------------- scan state


def insert_cursor_key(dag_id: str) -> str:
    return f"cupid.{dag_id}.insert_cursor"


def update_mark_key(dag_id: str) -> str:
    return f"cupid.{dag_id}.update_hwm"


class InsertCursor(TypedDict):
    """The last claimed source id, recent claims by run id (a retried scan gets its range back),
    and the open ranges: claimed, but not yet compared by a run whose compares all succeeded
    (see :mod:`cupid_airflow.core.claims`)."""

    version: int
    cursor: int | None  # None: nothing claimed yet, start at src.startId
    claims: dict[str, list[int]]  # run_id -> [after, upto]: ids after < id <= upto
    open: dict[str, list[list[int]]]  # run_id -> the [after, upto] ranges that run must still confirm
    gaps: list[list[float]]  # [lo, hi, first seen (epoch s)]: ids missing in a claim, watched for late commits


def read_insert_cursor(store: Store, dag_id: str) -> InsertCursor:
    key = insert_cursor_key(dag_id)
    data = store.get(key, None) or {}
    try:
        if not isinstance(data, dict):
            raise TypeError(f"holds {type(data).__name__}")
        _check_version("insert cursor", data)
        claims = {str(k): [int(v[0]), int(v[1])] for k, v in (data.get("claims") or {}).items()}
        open_ranges = {str(k): [[int(a), int(b)] for a, b in v] for k, v in (data.get("open") or {}).items()}
        cursor = data.get("cursor")
        cursor = None if cursor is None else int(cursor)
        gaps = [[int(lo), int(hi), float(seen)] for lo, hi, seen in data.get("gaps") or []]
    except StateError:
        raise
    except DECODING_ERRORS as e:
        raise StateError(
            f'Variable {key} is not an insert cursor ({e}); expected {{"version": 1, "cursor": <last checked '
            'id>, "claims": {}, "open": {}}. Fix it in Admin -> Variables, or delete it to start again at '
            "src.startId"
        ) from None
    return InsertCursor(version=STATE_VERSION, cursor=cursor, claims=claims, open=open_ranges, gaps=gaps)


def write_insert_cursor(store: Store, dag_id: str, state: InsertCursor) -> None:
    store.set(insert_cursor_key(dag_id), {**state, "version": STATE_VERSION})


class UpdateMark(TypedDict):
    """Where the last scheduled update scan's window ended (UTC, ISO 8601), and the windows of runs
    that have not confirmed them yet (run_id -> [[since, until], ...], ISO 8601)."""

    version: int
    until: str | None
    open: dict[str, list[list[str]]]


def read_update_state(store: Store, dag_id: str) -> UpdateMark:
    key = update_mark_key(dag_id)
    data = store.get(key, None)
    if data is None:
        return UpdateMark(version=STATE_VERSION, until=None, open={})
    if isinstance(data, str):  # before versions: the bare ISO string
        data = {"until": data}
    try:
        if not isinstance(data, dict):
            raise TypeError(f"holds {type(data).__name__}")
        _check_version("update high-water mark", data)
        until = data.get("until")
        if until is not None:
            until = _aware(datetime.fromisoformat(str(until))).isoformat()
        windows = {str(k): [[str(a), str(b)] for a, b in v] for k, v in (data.get("open") or {}).items()}
    except StateError:
        raise
    except DECODING_ERRORS as e:
        raise StateError(
            f'Variable {key} is not an update high-water mark ({e}); expected {{"version": 1, "until": '
            '<ISO 8601 time>, "open": {}}. Fix it in Admin -> Variables, or delete it (the next run then '
            "checks one schedule interval back)"
        ) from None
    return UpdateMark(version=STATE_VERSION, until=until, open=windows)


def read_update_mark(store: Store, dag_id: str) -> datetime | None:
    until = read_update_state(store, dag_id)["until"]
    return None if until is None else datetime.fromisoformat(until)


def write_update_state(store: Store, dag_id: str, state: UpdateMark) -> None:
    store.set(update_mark_key(dag_id), {**state, "version": STATE_VERSION})


class WatchMarks(TypedDict):
    """What a pair's watch trigger last fired for, kept in the asset state store of the pair's
    watch asset (key :data:`WATCH_MARKS_KEY`) so a triggerer restart neither loses a change nor
    fires again for an old one. ``max_updated`` is stored as :func:`encode_value` writes it."""

    version: int
    max_id: int | None
    max_updated: Any
    rows_at_max: int
    parts: list[str]  # what has been observed: "ids", "updates"


WATCH_MARKS_KEY = "cupid_watch_marks"
WATCH_MARKS_VERSION = 1


def read_watch_marks(data: Any) -> WatchMarks | None:
    """The marks as stored, or None when there are none or they cannot be read (then the trigger
    fires once and stores fresh ones: a spare run, never a lost change)."""
    if not isinstance(data, dict) or data.get("version") != WATCH_MARKS_VERSION:
        return None
    max_id, rows, parts = data.get("max_id"), data.get("rows_at_max", 0), data.get("parts")
    if not (max_id is None or type(max_id) is int) or type(rows) is not int or not isinstance(parts, list):
        return None
    return WatchMarks(
        version=WATCH_MARKS_VERSION,
        max_id=max_id,
        max_updated=data.get("max_updated"),
        rows_at_max=rows,
        parts=[str(p) for p in parts],
    )


def watch_marks_value(marks: WatchMarks) -> dict[str, Any]:
    """The marks as the state store keeps them (JSON)."""
    return {**marks, "version": WATCH_MARKS_VERSION}


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- alerts


def alert_mark_key(dag_id: str) -> str:
    return f"cupid.{dag_id}.last_alert"


class AlertMark(TypedDict):
    """The last failure alert a DAG sent: the same failure is not sent again for a while."""

    version: int
    signature: str  # the task, the kind of alert and the error with its numbers blanked
    at: float  # epoch seconds


def read_alert_mark(store: Store, dag_id: str) -> AlertMark | None:
    data = store.get(alert_mark_key(dag_id), None)
    if not isinstance(data, dict) or data.get("version", STATE_VERSION) != STATE_VERSION:
        return None  # unreadable: better one alert too many than one too few
    try:
        return AlertMark(version=STATE_VERSION, signature=str(data["signature"]), at=float(data["at"]))
    except DECODING_ERRORS:
        return None


def write_alert_mark(store: Store, dag_id: str, signature: str, at: float) -> None:
    store.set(alert_mark_key(dag_id), AlertMark(version=STATE_VERSION, signature=signature, at=at))


# ---------------------------------------------------------------------------- partitions


class IdPartition(TypedDict):
    """Source rows with ``after < id <= upto``."""

    version: int
    kind: Literal["ids"]
    after: int
    upto: int


class WindowPartition(TypedDict):
    """Source rows with ``since <= column < until``, bounds written as the column stores time."""

    version: int
    kind: Literal["window"]
    column: str
    vtype: str  # datetime | text | epoch_s | epoch_ms (see partitions.time_kind)
    since: Any  # encode_value of the bound
    until: Any
    exclude_ids: NotRequired[list[int]]  # [after, upto]: this run's insert claim, compared by its own partitions


Partition = IdPartition | WindowPartition


def id_partition(after: int, upto: int) -> IdPartition:
    return IdPartition(version=STATE_VERSION, kind="ids", after=int(after), upto=int(upto))


def window_partition(column: str, vtype: str, since: Any, until: Any) -> WindowPartition:
    return WindowPartition(
        version=STATE_VERSION,
        kind="window",
        column=column,
        vtype=vtype,
        since=encode_value(since),
        until=encode_value(until),
    )


def read_partition(data: Any) -> Partition:
    """A partition from XCom, checked: a wrong shape fails here with what it holds, not in SQL."""
    if not isinstance(data, dict) or data.get("kind") not in ("ids", "window"):
        raise StateError(f"{data!r} is not a partition; expected an object with kind 'ids' or 'window'")
    _check_version("partition", data)
    with decoding("a partition", "expected ids after/upto or a window's column, vtype, since and until"):
        if data["kind"] == "ids":
            return id_partition(data["after"], data["upto"])
        part = window_partition(str(data["column"]), str(data["vtype"]), None, None)
        # Before versions, datetime bounds were bare ISO strings with vtype "datetime".
        legacy = "version" not in data and data["vtype"] == "datetime"
        part["since"], part["until"] = (
            ({"datetime": data["since"]}, {"datetime": data["until"]}) if legacy else (data["since"], data["until"])
        )
        if data.get("exclude_ids"):
            part["exclude_ids"] = [int(i) for i in data["exclude_ids"]]
        return part


class CarriedEvents(TypedDict):
    """Events a scan compared itself (an inline run) but could not deliver. They travel in place
    of a partition: ``compare`` returns them as they are, and ``callback`` retries them as usual."""

    version: int
    kind: Literal["events"]
    events: list[Event]


def carried_events(events: list[Event]) -> CarriedEvents:
    return CarriedEvents(version=STATE_VERSION, kind="events", events=events)


#: Longest label of a mapped task instance (``map_index_template``; Airflow stores 250 characters).
LABEL_MAX_LEN = 120


def _bound(value: Any) -> str:
    text = "" if value is None else str(next(iter(value.values())) if isinstance(value, dict) else value)
    return text[:40]


def partition_label(data: Any) -> str:
    """What a mapped ``compare`` task reads, as its name in the UI: ``ids 1..200,000``,
    ``update_time 2026-11-28T10:00:00..2026-11-28T11:00:00``, ``5 carried events``."""
    carried = read_carried_events(data)
    if carried is not None:
        return f"{len(carried):,} carried events"
    part = read_partition(data)
    if part["kind"] == "ids":
        return f"ids {part['after'] + 1:,}..{part['upto']:,}"
    return f"{part['column']} {_bound(part['since'])}..{_bound(part['until'])}"[:LABEL_MAX_LEN]


def segment_label(column: str, segment: Any) -> str:
    """A reconcile segment as its task's name in the UI: ``number n1..n50000`` (``..`` open ends)."""
    return f"{column} {_bound(segment.get('lower'))}..{_bound(segment.get('upper'))}"[:LABEL_MAX_LEN]


def read_carried_events(data: Any) -> list[Event] | None:
    """The events a :class:`CarriedEvents` holds; None when ``data`` is a partition to compare."""
    if not isinstance(data, dict) or data.get("kind") != "events":
        return None
    _check_version("carried events", data)
    events = data.get("events")
    if not isinstance(events, list):
        raise StateError(f"carried events hold {type(events).__name__}, expected a list of events")
    return cast(list[Event], events)


# ---------------------------------------------------------------------------- events


class _EventRequired(TypedDict):
    type: int  # 1 missing, 2 different, 3 gone from the source (reconcile)
    srcColumn: dict[str, str | None] | None  # None for type 3
    eventId: str  # stable: the webhook-id, the receiver's dedupe key


class Event(_EventRequired, total=False):
    """One divergence, exactly as POSTed (cupid's body plus additions; README "The callback body")."""

    desTable: str
    byValue: str | None
    desColumn: dict[str, str | None]
    diffColumns: list[str]


# ---------------------------------------------------------------------------- reconcile


class Segment(TypedDict):
    """``lower <= key < upper`` of the source key (None: unbounded), encoded values."""

    lower: Any
    upper: Any


class ReconcileStats(TypedDict):
    chunks: int
    checksummed: int
    read: int
    rows: int


class ReconcileProgress(TypedDict):
    """How far one segment's walk got and what it found: a retry resumes from here."""

    version: int
    segment: Segment
    position: Any  # encoded key: the walk continues from here (inclusive lower bound)
    events: list[Event]
    stats: ReconcileStats
    found_at: float  # wall clock of the last chunk that held differences
    done: bool  # the walk finished; only the minAgeSeconds re-check is left


def new_progress(segment: Segment) -> ReconcileProgress:
    return ReconcileProgress(
        version=STATE_VERSION,
        segment=segment,
        position=segment["lower"],
        events=[],
        stats=ReconcileStats(chunks=0, checksummed=0, read=0, rows=0),
        found_at=0.0,
        done=False,
    )


def read_progress(store: Store | None, segment: Segment) -> ReconcileProgress | None:
    """The saved progress of *this* segment, or None (after a clear, plan may cut other segments)."""
    data = store.get(PROGRESS_KEY, None) if store is not None else None
    if not isinstance(data, dict) or data.get("segment") != segment:
        return None
    _check_version("reconcile progress", data)
    with decoding(f"task state {PROGRESS_KEY}", "clear the task to walk its segment again"):
        return ReconcileProgress(
            version=STATE_VERSION,
            segment=segment,
            position=data["position"],
            events=list(data["events"]),
            stats=ReconcileStats(
                chunks=int(data["stats"]["chunks"]),
                checksummed=int(data["stats"]["checksummed"]),
                read=int(data["stats"]["read"]),
                rows=int(data["stats"]["rows"]),
            ),
            found_at=float(data["found_at"]) if data.get("found_at") is not None else clock.time(),
            done=bool(data.get("done", False)),
        )


def write_progress(store: Store, progress: ReconcileProgress) -> None:
    store.set(PROGRESS_KEY, progress)


def clear_progress(store: Store) -> None:
    """The segment is finished: a later clear runs a full pass again."""
    store.delete(PROGRESS_KEY)


def progress_size(progress: ReconcileProgress) -> int:
    return len(json.dumps(progress, default=str))


# ---------------------------------------------------------------------------- callback


class DeliveredIds(TypedDict):
    """Which of a callback task's events earlier tries delivered: one bit an event, over the task's
    event list (its XCom, the same list on every try), with a digest of that list so a changed list
    is never misread (then everything is sent again). Rewritten every second while delivering, so
    it must stay small: n/8 bytes, 17 KB of base64 for 100,000 events."""

    version: int
    events: str  # sha256 of the event ids in list order (:class:`EventDigest`)
    bitmap: str  # base64; bit i (byte i // 8, bit i % 8) = event i was delivered


class DeliveredBits:
    """:class:`DeliveredIds` while a callback task delivers: marked by position in its event list."""

    def __init__(self, digest: str, count: int, legacy_ids: frozenset[str] = frozenset()) -> None:
        self.digest = digest
        self.count = count
        self.bits = bytearray((count + 7) // 8)
        self._legacy_ids = legacy_ids  # an unversioned list of ids (before bitmaps): matched by id

    @classmethod
    def read(cls, store: Store | None, digest: str, count: int) -> DeliveredBits:
        """What earlier tries delivered of the event list with this digest (nothing, for another list)."""
        found = cls(digest, count)
        data = store.get(DELIVERED_KEY, None) if store is not None else None
        if data is None:
            return found
        if isinstance(data, list):
            return cls(digest, count, frozenset(str(i) for i in data))
        if not isinstance(data, dict):
            raise StateError(f"task state {DELIVERED_KEY} holds {type(data).__name__}, not delivered ids")
        _check_version("delivered ids", data)
        if data.get("events") == digest:  # else the upstream task ran again: nothing is known delivered
            with decoding(f"task state {DELIVERED_KEY}", "clear the task to send every event again"):
                bits = base64.b64decode(data["bitmap"], validate=True)[: len(found.bits)]
            found.bits[: len(bits)] = bits
        return found

    def done(self, position: int, event: Event) -> bool:
        return bool(self.bits[position // 8] >> (position % 8) & 1) or event["eventId"] in self._legacy_ids

    def mark(self, position: int) -> None:
        self.bits[position // 8] |= 1 << (position % 8)

    def delivered(self) -> int:
        return sum(bin(byte).count("1") for byte in self.bits)

    def write(self, store: Store) -> None:
        store.set(
            DELIVERED_KEY,
            DeliveredIds(version=STATE_VERSION, events=self.digest, bitmap=base64.b64encode(self.bits).decode()),
        )


def clear_delivered(store: Store) -> None:
    """All delivered: clearing the task later means "send them all again"."""
    store.delete(DELIVERED_KEY)


# ---------------------------------------------------------------------------- events between tasks

#: A compare (or reconcile) that finds more events than this pushes them to XCom in chunks of this
#: many and returns an :class:`EventChunks` instead, which its callback reads one chunk at a time:
#: neither task holds more than a chunk of events, whatever share of a partition diverges.
EVENT_CHUNK = 10_000


def event_chunk_key(index: int) -> str:
    return f"cupid_events_{index}"


class EventChunks(TypedDict):
    """A task's events kept in XCom chunks (keys :func:`event_chunk_key`) of that task instance."""

    version: int
    task_id: str
    map_index: int
    chunks: int
    count: int
    types: dict[str, int]  # events per type ("1", "2", "3"): what the run found, without reading them
    digest: str  # :class:`EventDigest` of all the events, in order


class EventDigest:
    """SHA-256 of the event ids joined by newlines, fed as the events come."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._first = True

    def add(self, event: Event) -> None:
        if not self._first:
            self._sha.update(b"\n")
        self._first = False
        self._sha.update(event["eventId"].encode())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    @classmethod
    def of(cls, events: Iterable[Event]) -> str:
        digest = cls()
        for event in events:
            digest.add(event)
        return digest.hexdigest()


class EventSpool:
    """Collects a task's events as they are found. Up to :data:`EVENT_CHUNK` they are returned as
    the plain list (readable in the UI's XCom tab, as before); beyond it each full chunk is pushed
    at once through ``push(key, events)`` and :meth:`finish` returns the :class:`EventChunks`."""

    def __init__(
        self, push: Callable[[str, list[Event]], None], task_id: str, map_index: int, chunk: int = EVENT_CHUNK
    ) -> None:
        self._push = push
        self._where = (task_id, map_index)
        self._chunk = chunk
        self._held: list[Event] = []
        self._digest = EventDigest()
        self.chunks = 0
        self.count = 0
        self.types: dict[str, int] = {}

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            if len(self._held) == self._chunk:
                self._flush()
            self._held.append(event)
            self._digest.add(event)
            self.count += 1
            kind = str(event["type"])
            self.types[kind] = self.types.get(kind, 0) + 1

    def _flush(self) -> None:
        self._push(event_chunk_key(self.chunks), self._held)
        self.chunks += 1
        self._held = []

    def finish(self) -> list[Event] | EventChunks:
        if not self.chunks:
            return self._held
        if self._held:
            self._flush()
        task_id, map_index = self._where
        return EventChunks(
            version=STATE_VERSION, task_id=task_id, map_index=map_index, chunks=self.chunks, count=self.count,
            types=self.types, digest=self._digest.hexdigest(),
        )  # fmt: skip


def read_event_output(data: Any) -> list[Event] | EventChunks:
    """A compare or reconcile task's output as its callback gets it: the events, or where they are."""
    if data is None:
        return []
    if isinstance(data, list):
        return cast(list[Event], data)
    if isinstance(data, dict) and {"task_id", "chunks", "count", "digest"} <= data.keys():
        _check_version("event chunks", data)
        return cast(EventChunks, data)
    raise StateError(f"expected a list of events or event chunks from the upstream task, got {type(data).__name__}")


def event_types(data: Any) -> dict[str, int]:
    """Events per type ("1", "2", "3") of a compare or reconcile task's output, chunked or not."""
    output = read_event_output(data)
    if not isinstance(output, list):
        return dict(output["types"])
    types: dict[str, int] = {}
    for event in output:
        types[str(event["type"])] = types.get(str(event["type"]), 0) + 1
    return types


# ---------------------------------------------------------------------------- what a task did

TALLY_KEY = "cupid_tally"


class Tally(TypedDict, total=False):
    """What one task instance did, in numbers, kept as its XCom :data:`TALLY_KEY`: the run note,
    the cupid view, metrics and lineage all read this, so none of them parses a log. A key is
    present only when the task has that figure."""

    version: int
    task: str  # scan | compare | callback | reconcile
    rows: int  # source rows compared (compare; scan when it compared inline; reconcile)
    found: dict[str, int]  # divergences by type: "1" missing, "2" different, "3" gone from the source
    events: int  # callback: the events it had to deliver
    delivered: int  # callback: delivered, by this try or an earlier one
    failed: int  # callback: still undelivered when this try ended
    max_id: int  # scan: the source's highest id when it claimed (the backlog's top)
    cursor: int  # scan: the insert cursor after its claim
    until: str  # scan: where its update window ended (ISO 8601, UTC): the update high-water mark
    chunks: int  # reconcile: key chunks walked
    checksummed: int  # reconcile: chunks settled by checksum alone
    read: int  # reconcile: chunks whose rows were read


#: What each figure of a :class:`Tally` must be: a whole number (never a bool), a count that is
#: never negative, divergences by type, an ISO 8601 time.
TALLY_TASKS = frozenset({"scan", "compare", "callback", "reconcile"})
_TALLY_COUNTS = frozenset({"rows", "events", "delivered", "failed", "chunks", "checksummed", "read"})
_TALLY_IDS = frozenset({"max_id", "cursor"})
TALLY_TYPES = frozenset({"1", "2", "3"})


def _whole(value: Any, smallest: int | None = None) -> int:
    if type(value) is not int or (smallest is not None and value < smallest):
        raise TypeError(f"{value!r} is not a whole number" + (f" >= {smallest}" if smallest is not None else ""))
    return value


def read_tally(data: Any) -> Tally:
    """A task's tally from its XCom, checked figure by figure: anyone allowed to edit a DAG's XComs
    can write this key, and one record of the wrong shape must cost its own figures, not the run
    note or the cupid view of every pair. Keys a newer release added are kept unread."""
    if not isinstance(data, dict):
        raise StateError(f"a task tally holds {type(data).__name__}, not an object")
    _check_version("task tally", data)
    with decoding("a task tally", "expected the figures cupid writes (whole numbers, divergences by type)"):
        if data.get("task") not in TALLY_TASKS:
            raise ValueError(f"task is not one of {sorted(TALLY_TASKS)}")
        for key in _TALLY_COUNTS & data.keys():
            _whole(data[key], 0)
        for key in _TALLY_IDS & data.keys():
            _whole(data[key])
        if "found" in data:
            found = data["found"]
            if not isinstance(found, dict) or not set(found) <= TALLY_TYPES:
                raise ValueError(f"found is not divergences by type {sorted(TALLY_TYPES)}")
            for count in found.values():
                _whole(count, 0)
        if "until" in data:
            datetime.fromisoformat(data["until"])
    return cast(Tally, data)
