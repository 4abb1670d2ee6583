"""The one codec of every state cupid keeps or hands between tasks, and the rules all of them
follow. Each state is defined in the module of the concept it belongs to:

==============================  ==========================================  ==============================
state (module)                  store, key                                  written by
==============================  ==========================================  ==============================
``InsertCursor`` (positions)    Variable ``cupid.<dag_id>.insert_cursor``   ``scan``
``UpdateMark`` (positions)      Variable ``cupid.<dag_id>.update_hwm``      ``scan``
``AlertMark`` (alerts)          Variable ``cupid.<dag_id>.last_alert``      failure alerts
``WatchMarks`` (watch)          asset state store ``cupid_watch_marks``     the watch trigger
``IdPartition``,                XCom of ``scan``                            ``scan`` -> ``compare``
``WindowPartition`` (partitions)
``CarriedEvents`` (events)      XCom of ``scan`` (an inline run's rest)     ``scan`` -> ``compare`` -> ``callback``
``Event`` (events)              XCom of compare/reconcile                   -> ``callback``; the POST body
``EventChunks`` (events)        the same, past 10,000 events: XCom chunks   -> ``callback``, a chunk at a time
``Segment``,                    XCom of ``plan``;                           ``plan`` -> ``reconcile``;
``ReconcileProgress``           task state store ``reconcile_progress``     ``reconcile`` (resume)
(reconcile_progress)
``DeliveredIds`` (delivered)    task state store ``delivered_event_ids``    ``callback`` (resume)
``Tally`` (tally)               XCom ``cupid_tally`` of every task          each task -> run note, cupid
                                                                            view, metrics, lineage
==============================  ==========================================  ==============================

Each persisted shape carries ``version``; readers accept the current version and the unversioned
shape written before versions existed, and reject anything newer with an error that says so
(a downgrade must not misread a newer format). Events carry no version: their body is the
callback contract, which only ever gains keys. A reader turns any error of decoding what it
read (a hand edit, a foreign writer) into :class:`StateError` (:func:`decoding`), which the
operators turn into a failure that says what to fix, and the cupid view into "unknown".

Values (ids, keys, window bounds) go through :func:`encode_value`/:func:`decode_value`, so a
DECIMAL, DATETIME, DATE or binary key comes back as the type the database compares it with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol

from cupid_airflow.core.errors import UnsupportedValueError

__all__ = [
    "DECODING_ERRORS",
    "STATE_VERSION",
    "StateError",
    "Store",
    "check_version",
    "decode_value",
    "decoding",
    "encode_value",
    "shortened",
]

STATE_VERSION = 1


class StateError(ValueError):
    """A stored state this version of cupid cannot read."""


class Store(Protocol):
    """What cupid needs of a key-value store: Airflow's task state store has this shape, and
    operators adapt Variables to it."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


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
#: number too large for its type (``1e999`` as an id is infinity), a missing key, nesting too deep.
DECODING_ERRORS = (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RecursionError)
#: How much of a decoding error's own words a StateError keeps: they may quote the value read,
#: which can be megabytes long.
ERROR_TEXT_LIMIT = 200


@contextmanager
def decoding(what: str, expected: str = "") -> Iterator[None]:
    """Turns any error of reading a stored value into the :class:`StateError` callers handle, with
    what was being read and what was expected; the error's own words, which may quote the value,
    are cut to :data:`ERROR_TEXT_LIMIT` characters."""
    try:
        yield
    except StateError:
        raise
    except DECODING_ERRORS as e:
        said = shortened(str(e))
        raise StateError(
            f"{what} cannot be read ({type(e).__name__}: {said}){'; ' + expected if expected else ''}"
        ) from None


def shortened(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying so."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def check_version(kind: str, data: Mapping[str, Any]) -> None:
    version = data.get("version", STATE_VERSION)
    if version != STATE_VERSION:
        raise StateError(
            f"{kind} has version {version!r}; this cupid-airflow reads version {STATE_VERSION} "
            "(was it written by a newer release?)"
        )
