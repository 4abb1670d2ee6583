"""Which of a callback task's events earlier tries delivered: the bitmap beside
:mod:`cupid_airflow.core.delivery`'s loop, kept in the task instance's state store so a retry,
or a try after the worker was killed, does not send them again."""

from __future__ import annotations

import base64
from typing import TypedDict

from cupid_airflow.core.codec import STATE_VERSION, StateError, Store, check_version, decoding
from cupid_airflow.core.events import Event

__all__ = ["DELIVERED_KEY", "DeliveredBits", "DeliveredIds", "clear_delivered"]

#: The task state store key (one task instance's own store).
DELIVERED_KEY = "delivered_event_ids"


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
        check_version("delivered ids", data)
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
