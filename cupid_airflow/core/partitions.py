"""Cutting id ranges and update windows into partitions: the unit of work of one mapped ``compare``.

A partition (:class:`IdPartition` or :class:`WindowPartition`) is a small JSON-able dict that travels through
XCom: ids ``after < id <= upto``, or rows with ``since <= column < until`` where the bounds are
written as the column stores time.

Boundaries come from the database's index (``ORDER BY ... LIMIT 1 OFFSET n``), so each partition
holds about ``chunk`` rows however sparse the ids are: a gap of millions of ids costs nothing.
No Airflow import: the reader is anything with the two ``nth_*`` methods of
:class:`BoundaryReader` (:class:`cupid_airflow.hooks.table.Table` in production, a list in the unit
tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, NotRequired, Protocol, TypedDict, TypeVar
from zoneinfo import ZoneInfo

from cupid_airflow.core.codec import STATE_VERSION, StateError, check_version, decode_value, decoding, encode_value
from cupid_airflow.core.errors import TimeColumnError
from cupid_airflow.timeformat import TimeFormat

__all__ = [
    "MAX_PARTITIONS",
    "ColumnTime",
    "IdPartition",
    "Partition",
    "WindowPartition",
    "id_partition",
    "id_partitions",
    "merge_to_limit",
    "read_partition",
    "rows_at_most",
    "time_kind",
    "window_partition",
    "window_partitions",
]


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
    check_version("partition", data)
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


#: Per scan task. Two scans feed one mapped compare, and Airflow refuses more than max_map_length
#: (1024) mapped instances, so each scan stays at or below this many.
MAX_PARTITIONS = 500


class BoundaryReader(Protocol):
    def nth_after(self, column: str, after: Any, before: Any | None, offset: int) -> Any: ...

    def nth_in_window(self, column: str, since: Any, until: Any, offset: int) -> Any: ...


_P = TypeVar("_P", IdPartition, WindowPartition)


def merge_to_limit(parts: list[_P], limit: int = MAX_PARTITIONS) -> list[_P]:
    """Join neighbouring partitions until at most ``limit`` remain (bigger partitions, same rows)."""
    if len(parts) <= limit:
        return parts
    group = math.ceil(len(parts) / limit)
    lo_key, hi_key = ("after", "upto") if parts[0]["kind"] == "ids" else ("since", "until")
    merged: list[Any] = []
    for i in range(0, len(parts), group):
        chunk = parts[i : i + group]
        merged.append({**chunk[0], hi_key: chunk[-1][hi_key], lo_key: chunk[0][lo_key]})  # type: ignore[literal-required]
    return merged


def id_partitions(reader: BoundaryReader, after: int, upto: int, chunk: int, column: str) -> list[IdPartition]:
    """Partitions of about ``chunk`` rows covering ``after < id <= upto``."""
    parts: list[IdPartition] = []
    low = after
    while low < upto:
        high = reader.nth_after(column, low, None, chunk - 1)
        if high is None or high >= upto:
            parts.append(id_partition(low, upto))
            break
        parts.append(id_partition(low, int(high)))
        low = int(high)
    return merge_to_limit(parts)


def window_partitions(
    reader: BoundaryReader, column: str, vtype: str, since: Any, until: Any, chunk: int
) -> list[WindowPartition]:
    """Partitions of about ``chunk`` rows covering ``since <= column < until``.

    Cuts fall between distinct values only, so rows sharing a timestamp stay together.
    """
    low = reader.nth_in_window(column, since, until, 0)
    if low is None:
        return []  # no row in the window: no compare task at all
    parts: list[WindowPartition] = []
    start = since  # the first partition keeps the window's own start
    while True:
        cut = reader.nth_in_window(column, low, until, chunk)
        if cut is not None and cut == low:
            cut = reader.nth_after(column, low, until, 0)  # the next distinct value
        if cut is None:
            parts.append(window_partition(column, vtype, start, until))
            break
        parts.append(window_partition(column, vtype, start, cut))
        start = low = cut
    return merge_to_limit(parts)


def rows_at_most(reader: BoundaryReader, parts: Sequence[Partition], limit: int, id_column: str = "id") -> bool:
    """Whether ``parts`` hold at most ``limit`` source rows, known from the index without reading
    them. Id ranges count by their width (an upper bound) and windows get one
    ``LIMIT 1 OFFSET n`` probe each, sharing what the widths left; when that cannot tell, every
    partition is probed with an equal share, so sparse ids (deleted rows, a pair whose first
    pass was skipped) do not force the mapped tasks on a run of a few rows."""

    def within(part: Partition, share: int) -> bool:
        if part["kind"] == "ids":
            return reader.nth_after(id_column, part["after"], part["upto"] + 1, share) is None
        return (
            reader.nth_in_window(part["column"], decode_value(part["since"]), decode_value(part["until"]), share)
            is None
        )

    width = sum(p["upto"] - p["after"] for p in parts if p["kind"] == "ids")
    windows = [p for p in parts if p["kind"] == "window"]
    if width <= limit:
        if not windows:
            return True
        share = (limit - width) // len(windows)
        if share >= 1 and all(within(w, share) for w in windows):
            return True
    share = limit // max(1, len(parts))
    return share >= 1 and all(within(p, share) for p in parts)


def time_kind(sample: Any) -> str:
    """How a time column stores time, judged from one of its values."""
    if isinstance(sample, datetime):
        return "datetime"
    if isinstance(sample, str):
        return "text"
    if isinstance(sample, int | Decimal) and not isinstance(sample, bool):
        return "epoch_ms" if abs(int(sample)) >= 100_000_000_000 else "epoch_s"
    raise TimeColumnError(
        f"update column values are {type(sample).__name__} ({sample!r}); expected DATETIME/TIMESTAMP, "
        "a string in updateTimeFormate, or epoch seconds/milliseconds"
    )


class ColumnTime:
    """Instants (aware datetimes) written as the update column stores them."""

    def __init__(self, vtype: str, zone: str, fmt: TimeFormat) -> None:
        if vtype == "text" and not fmt.sortable:
            raise TimeColumnError(
                f"updateTimeFormate {fmt.text!r} does not sort as text (it is not zero-padded year-month-day "
                "hour:minute:second), so a string column in it cannot be range-scanned; store the column in "
                "a format like 'Y-m-d H:i:s' / '2006-01-02 15:04:05', or as DATETIME"
            )
        self.vtype = vtype
        self.zone = ZoneInfo(zone)
        self.fmt = fmt

    def window(self, since: datetime, until: datetime) -> tuple[Any, Any]:
        """``[since, until)`` as column values that cover every instant in it.

        Local wall-clock values (DATETIME or text in ``src.timezone``) repeat an hour when clocks go
        back: 01:30 EST comes after 01:45 EDT. A window that crosses the change is widened by the
        offset change on both sides, so no row stamped in the repeated hour falls between two
        windows; rows near it may be compared twice (same event ids). Epoch columns need nothing.
        """
        if self.vtype in ("datetime", "text"):
            shift = abs(self._offset(since) - self._offset(until))
            if shift:
                since, until = since - shift, until + shift
        return self.lower(since), self.upper(until)

    def _offset(self, instant: datetime) -> timedelta:
        instant = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
        return instant.astimezone(self.zone).utcoffset() or timedelta(0)

    def lower(self, instant: datetime) -> Any:
        return self._write(instant, math.floor)

    def upper(self, instant: datetime) -> Any:
        return self._write(instant, math.ceil)

    def epoch(self, value: Any) -> float | None:
        """When a value of the column was written, as epoch seconds (the inverse of :meth:`lower`);
        None for a NULL or a value that does not read as a time."""
        if value is None:
            return None
        try:
            if self.vtype in ("epoch_s", "epoch_ms"):
                return float(value) / (1000 if self.vtype == "epoch_ms" else 1)
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
        except (TypeError, ValueError, ArithmeticError):
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=self.zone)).timestamp()

    def _write(self, instant: datetime, rounding: Any) -> Any:
        instant = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
        if self.vtype == "datetime":
            return instant.astimezone(self.zone).replace(tzinfo=None)
        if self.vtype == "text":
            return self.fmt.format(instant.astimezone(self.zone))
        scale = 1000 if self.vtype == "epoch_ms" else 1
        return int(rounding(instant.timestamp() * scale))
