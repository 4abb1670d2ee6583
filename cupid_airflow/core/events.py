"""The event contract: one divergence as the callback body carries it, and how a task's events
travel to its callback (a plain list, XCom chunks past :data:`EVENT_CHUNK`, the events a small
run's scan could not deliver), with the digest that names a list of them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypedDict, cast

from cupid_airflow.core.codec import STATE_VERSION, StateError, check_version

__all__ = [
    "EVENT_CHUNK",
    "CarriedEvents",
    "Event",
    "EventChunks",
    "EventDigest",
    "EventSpool",
    "carried_events",
    "event_chunk_key",
    "event_types",
    "read_carried_events",
    "read_event_output",
]


class _EventRequired(TypedDict):
    type: int  # a Divergence: 1 missing, 2 different, 3 gone from the source (reconcile)
    srcColumn: dict[str, str | None] | None  # None for type 3
    eventId: str  # stable: the webhook-id, the receiver's dedupe key


class Event(_EventRequired, total=False):
    """One divergence, exactly as POSTed (cupid's body plus additions; README "The callback body")."""

    desTable: str
    byValue: str | None
    desColumn: dict[str, str | None]
    diffColumns: list[str]


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
    types: dict[str, int]  # events per Divergence.key: what the run found, without reading them
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
        check_version("event chunks", data)
        return cast(EventChunks, data)
    raise StateError(f"expected a list of events or event chunks from the upstream task, got {type(data).__name__}")


def event_types(data: Any) -> dict[str, int]:
    """Events per type (:attr:`Divergence.key <cupid_airflow.core.divergence.Divergence.key>`) of a
    compare or reconcile task's output, chunked or not."""
    output = read_event_output(data)
    if not isinstance(output, list):
        return dict(output["types"])
    types: dict[str, int] = {}
    for event in output:
        types[str(event["type"])] = types.get(str(event["type"]), 0) + 1
    return types


class CarriedEvents(TypedDict):
    """Events a scan compared itself (an inline run) but could not deliver. They travel in place
    of a partition: ``compare`` returns them as they are, and ``callback`` retries them as usual."""

    version: int
    kind: Literal["events"]
    events: list[Event]


def carried_events(events: list[Event]) -> CarriedEvents:
    return CarriedEvents(version=STATE_VERSION, kind="events", events=events)


def read_carried_events(data: Any) -> list[Event] | None:
    """The events a :class:`CarriedEvents` holds; None when ``data`` is a partition to compare."""
    if not isinstance(data, dict) or data.get("kind") != "events":
        return None
    check_version("carried events", data)
    events = data.get("events")
    if not isinstance(events, list):
        raise StateError(f"carried events hold {type(events).__name__}, expected a list of events")
    return cast(list[Event], events)
