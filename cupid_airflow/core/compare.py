"""Row comparison: the part of cupid that decides what is "different". No Airflow, no database.

Rows arrive as tuples straight from DB-API cursors. Most rows are identical and compare equal as
tuples, in C; only rows that differ as Python values go through :func:`values_equal`, which makes
equal values equal across types (DECIMAL vs text, DATETIME vs text, bytes vs str) without hiding a
real difference (NULL is not '', 0 is not NULL, case matters). Trailing-space and collation rules
(``'a ' = 'a'`` and ``'A' = 'a'`` in MySQL's default collations) are deliberately *not* applied:
a replica that changed case or padding did change the data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import Event

__all__ = [
    "BATCH_SIZE",
    "ID_COLUMN",
    "LOOKUP_THREADS",
    "PairComparer",
    "lookup_keys",
    "to_text",
    "values_equal",
]

#: cupid watches tables by their integer auto-increment id, as cupid-go does.
ID_COLUMN = "id"
#: Rows per source fetch and keys per destination ``IN`` lookup (and per minAgeSeconds re-check).
BATCH_SIZE = 5000
#: Destination lookups in flight at once, each on its own connection: while the server resolves
#: one batch's keys, the client converts another's rows and compares a third.
LOOKUP_THREADS = 3


_NUMBERS = (int, float, Decimal)


def _timedelta_text(value: timedelta) -> str:
    """MySQL's TIME text: ``-838:59:59`` .. ``838:59:59``, with microseconds when present."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.days * 86400 + value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    micro = f".{value.microseconds:06d}" if value.microseconds else ""
    return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}{micro}"


def to_text(value: Any) -> str | None:
    """A value as cupid's callback carries it: a string, or None for SQL NULL.

    Decimals keep their scale (``10.50``), datetimes read as MySQL writes them
    (``2024-01-02 03:04:05[.ffffff]``), booleans as ``1``/``0``, bytes as UTF-8 text (or ``0x``
    and hex digits when they are not UTF-8).
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _timedelta_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + raw.hex()
    return str(value)


def lookup_keys(by_value: str | None) -> list[Any]:
    """An event's ``byValue`` (:func:`to_text` of the key) as key parameters to look it up by:
    binary keys that are not UTF-8 are written ``0x<hex>``, so those are looked up as the bytes
    too."""
    if by_value is None:
        return []
    if re.fullmatch(r"0x(?:[0-9a-f]{2})+", by_value):
        return [by_value, bytes.fromhex(by_value[2:])]
    return [by_value]


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return _as_datetime(datetime.fromisoformat(value.strip()))
        except ValueError:
            return None
    return None


def values_equal(a: Any, b: Any) -> bool:
    """Whether two column values are the same data, whatever Python types the drivers gave them."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bytes | bytearray | memoryview) or isinstance(b, bytes | bytearray | memoryview):
        return to_text(a) == to_text(b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, _NUMBERS) or isinstance(b, _NUMBERS):
        x, y = _as_decimal(a), _as_decimal(b)
        return x is not None and y is not None and x == y
    if isinstance(a, date) or isinstance(b, date):
        x_dt, y_dt = _as_datetime(a), _as_datetime(b)
        return x_dt is not None and x_dt == y_dt
    return to_text(a) == to_text(b)


def _match_key(value: Any) -> Hashable:
    """A join key for sides of different types (INT source, VARCHAR replica): numbers by value.

    MySQL compares such keys numerically too (``'1003.0' IN (1003)`` is true), so the rows the
    lookup returns pair up with the source rows that asked for them.
    """
    number = _as_decimal(value) if isinstance(value, str | int | Decimal | float) else None
    if number is not None:
        return str(number.normalize()) if number != 0 else "0"
    return to_text(value)


def _key_function(src_keys: Sequence[Any], des_keys: Sequence[Any]) -> Callable[[Any], Hashable]:
    """Identity when both sides' keys have one type (a column has one type: the common case)."""
    types = {type(k) for k in src_keys if k is not None} | {type(k) for k in des_keys if k is not None}
    if len(types) <= 1:
        return lambda k: k
    return lambda k: None if k is None else _match_key(k)


def _event_id(*parts: Any) -> str:
    """A stable id for one divergence (the ``webhook-id``): the same parts give the same id in any run."""
    return hashlib.sha256(json.dumps(list(parts), ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PairComparer:
    """Compares batches of source rows with the destination rows that share their keys.

    Source rows are ``(id, key, *mapped source columns)``, possibly followed by columns the
    comparer ignores (the update column's value, for confirmation); destination rows are
    ``(key, *mapped destination columns)`` in the same column order.
    """

    pair_id: str  # stable identity of the sync pair (the dag id), part of every event id
    table: str  # destination table, for the callback body
    src_by_column: str
    src_columns: tuple[str, ...]
    des_columns: tuple[str, ...]

    def compare(self, src_rows: Sequence[Sequence[Any]], des_rows: Sequence[Sequence[Any]]) -> list[Event]:
        """One event per source row that is missing from or different in the destination."""
        keyf = _key_function([r[1] for r in src_rows[:64]], [r[0] for r in des_rows[:64]])
        by_key: dict[Hashable, list[tuple[Any, ...]]] = {}
        for row in des_rows:
            by_key.setdefault(keyf(row[0]), []).append(tuple(row[1:]))
        events: list[Event] = []
        width = 2 + len(self.src_columns)
        for row in src_rows:
            values = tuple(row[2:width])
            candidates = by_key.get(keyf(row[1])) if row[1] is not None else None
            if candidates is None:
                events.append(self._event(Divergence.MISSING, row, None, []))
                continue
            if values in candidates:
                continue
            best: tuple[tuple[Any, ...], list[int]] | None = None
            for candidate in candidates:
                differing = [i for i, (a, b) in enumerate(zip(values, candidate)) if a != b and not values_equal(a, b)]
                if not differing:
                    break
                if best is None:
                    best = (candidate, differing)
            else:
                assert best is not None
                events.append(self._event(Divergence.DIFFERENT, row, best[0], best[1]))
        return events

    def diff(self, src_rows: Sequence[Sequence[Any]], des_rows: Sequence[Sequence[Any]]) -> list[Event]:
        """Types 1, 2 and 3 for two sides holding the same key range (reconcile's read path).

        One dict of the destination by key, one pass over the source popping from it, and what is
        left is gone from the source. Falls back to :meth:`compare` plus :meth:`gone` when keys
        repeat or differ in type between the sides.
        """
        des_map = {row[0]: row[1:] for row in des_rows}
        types = {type(r[1]) for r in src_rows[:64]} | {type(r[0]) for r in des_rows[:64]}
        repeated = len(des_map) != len(des_rows) or len({r[1] for r in src_rows}) != len(src_rows)
        if repeated or len(types) > 1 or None in des_map:
            return self.compare(src_rows, des_rows) + self.gone([r[1] for r in src_rows], des_rows)
        events: list[Event] = []
        pop = des_map.pop
        for row in src_rows:
            des_values = pop(row[1], None)  # the values are tuples, never None
            if des_values is None:
                events.append(self._event(Divergence.MISSING, row, None, []))
            elif des_values != tuple(row[2:]):
                values = row[2:]
                differing = [i for i, (a, b) in enumerate(zip(values, des_values)) if a != b and not values_equal(a, b)]
                if differing:
                    events.append(self._event(Divergence.DIFFERENT, row, des_values, differing))
        if des_map:
            events.extend(self.gone([], [(key, *values) for key, values in des_map.items()]))
        return events

    def gone(self, src_keys: Sequence[Any], des_rows: Sequence[Sequence[Any]]) -> list[Event]:
        """One type-3 event per destination row ``(key, *columns)`` whose key is not among ``src_keys``."""
        keyf = _key_function(list(src_keys[:64]), [r[0] for r in des_rows[:64]])
        present = {keyf(k) for k in src_keys}
        events: list[Event] = []
        for row in des_rows:
            if row[0] is None or keyf(row[0]) in present:
                continue
            des_column = dict(zip(self.des_columns, map(to_text, row[1:])))
            by_value = to_text(row[0])
            events.append(
                {
                    "type": int(Divergence.GONE),
                    "srcColumn": None,
                    "eventId": _event_id(self.pair_id, int(Divergence.GONE), by_value, des_column),
                    "desTable": self.table,
                    "byValue": by_value,
                    "desColumn": des_column,
                }
            )
        return events

    def _event(
        self, kind: Divergence, row: Sequence[Any], des_values: Sequence[Any] | None, differing: list[int]
    ) -> Event:
        src_column = {"id": to_text(row[0]), self.src_by_column: to_text(row[1])}
        src_column.update(zip(self.src_columns, map(to_text, row[2 : 2 + len(self.src_columns)])))
        event: dict[str, Any] = {"type": int(kind), "srcColumn": src_column}
        des_column = None if des_values is None else dict(zip(self.des_columns, map(to_text, des_values)))
        event["eventId"] = _event_id(self.pair_id, int(kind), src_column, des_column)
        event["desTable"] = self.table
        event["byValue"] = to_text(row[1])
        if des_column is not None:
            event["desColumn"] = des_column
            event["diffColumns"] = [self.des_columns[i] for i in differing]
        return cast(Event, event)
