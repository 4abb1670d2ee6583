"""The comparison core on its own: what counts as equal, what never does, and what an event holds."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cupid_airflow.core.compare import PairComparer, to_text, values_equal


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (Decimal("10.50"), "10.5"),
        (Decimal("10.50"), Decimal("10.5")),
        (10, "10"),
        (10, Decimal("10.00")),
        (1.5, Decimal("1.50")),
        (True, 1),
        (datetime(2024, 1, 1, 12), datetime(2024, 1, 1, 12, 0, 0, 0)),
        (datetime(2024, 1, 1, 12), "2024-01-01 12:00:00.000000"),
        (datetime(2024, 1, 1, 12, 0, 0, 250000), "2024-01-01 12:00:00.25"),
        (date(2024, 1, 1), datetime(2024, 1, 1)),
        (b"caf\xc3\xa9", "café"),
        (bytearray(b"x"), b"x"),
        (None, None),
        ("Ünïcode 😀", "Ünïcode 😀"),
    ],
)
def test_equal_across_types(a: Any, b: Any) -> None:
    assert values_equal(a, b) and values_equal(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (None, ""),
        (0, None),
        (Decimal("0"), None),
        ("a", "A"),
        ("a", "a "),  # trailing spaces are data here, whatever the collation says
        ("007", "7"),  # two strings compare as strings
        (Decimal("10.5"), "10.5x"),
        (datetime(2024, 1, 1, 12, 0, 0, 500000), datetime(2024, 1, 1, 12)),
        (datetime(2024, 1, 1), "yesterday"),
        (b"\xff", "\xff"),
        (1, 2),
        (timedelta(hours=1), "01:00:01"),
    ],
)
def test_never_hides_a_real_difference(a: Any, b: Any) -> None:
    assert not values_equal(a, b) and not values_equal(b, a)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        ("x", "x"),
        (Decimal("10.50"), "10.50"),
        (12, "12"),
        (True, "1"),
        (0.1, "0.1"),
        (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02 03:04:05"),
        (datetime(2024, 1, 2, 3, 4, 5, 6), "2024-01-02 03:04:05.000006"),
        (date(2024, 1, 2), "2024-01-02"),
        (time(3, 4, 5), "03:04:05"),
        (timedelta(hours=-26, minutes=3), "-25:57:00"),
        (b"\xe8\xa1\xa8", "表"),
        (b"\x00\xff", "0x00ff"),
    ],
)
def test_callback_text(value: Any, text: str | None) -> None:
    assert to_text(value) == text


COMPARER = PairComparer("dag", "des_table", "number", ("number", "name"), ("no", "nick"))


def test_events_one_per_row_with_every_differing_column() -> None:
    src = [(1, "a", "a", "Ann"), (2, "b", "b", "Ben"), (3, "c", "c", "Cy")]
    des = [("a", "a", "Ann"), ("b", "B", "Benjamin")]
    events = COMPARER.compare(src, des)
    assert [(e["type"], e["byValue"], e.get("diffColumns")) for e in events] == [
        (2, "b", ["no", "nick"]),
        (1, "c", None),
    ]
    assert events[0]["srcColumn"] == {"id": "2", "number": "b", "name": "Ben"}
    assert events[0]["desColumn"] == {"no": "B", "nick": "Benjamin"}


def test_keys_of_different_types_still_match() -> None:
    comparer = PairComparer("dag", "t", "number", ("name",), ("name",))
    src = [(1, 1001, "x"), (2, 1002, "y"), (3, Decimal("1003"), "z")]
    des = [("1001", "x"), ("1002", "Y"), ("1003.0", "z")]  # INT source key, VARCHAR/DECIMAL replica key
    assert [(e["type"], e["byValue"]) for e in comparer.compare(src, des)] == [(2, "1002")]


def test_duplicate_destination_keys_and_null_source_key() -> None:
    src = [(1, "a", "a", "Ann"), (2, None, None, "nobody")]
    des = [("a", "a", "Old"), ("a", "a", "Ann")]
    events = COMPARER.compare(src, des)
    assert [(e["type"], e["srcColumn"]["id"]) for e in events] == [(1, "2")]  # a NULL key matches nothing


def test_event_ids_are_stable_and_change_with_the_divergence() -> None:
    src = [(1, "a", "a", "Ann")]
    first = COMPARER.compare(src, [("a", "a", "Anne")])[0]["eventId"]
    assert COMPARER.compare(src, [("a", "a", "Anne")])[0]["eventId"] == first
    assert COMPARER.compare(src, [("a", "a", "Annie")])[0]["eventId"] != first
    other_pair = PairComparer("other_dag", "des_table", "number", ("number", "name"), ("no", "nick"))
    assert other_pair.compare(src, [("a", "a", "Anne")])[0]["eventId"] != first


def test_diff_agrees_with_compare_when_source_keys_repeat() -> None:
    """A source with a repeated key (no unique index on byColumn) is not a missing row."""
    src = [(1, "x", "x", "a"), (2, "x", "x", "a"), (3, "y", "y", "b")]
    des = [("x", "x", "a")]
    assert COMPARER.compare(src, des) == [e for e in COMPARER.diff(src, des) if e["type"] != 3]
    assert [(e["type"], e["byValue"]) for e in COMPARER.diff(src, des)] == [(1, "y")]
