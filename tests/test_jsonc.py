"""JSON with comments: comments go, strings and line numbers stay."""

from __future__ import annotations

import pytest

from cupid_airflow.jsonc import JsonWithCommentsError, loads_with_comments, strip_comments


def test_strip_keeps_positions_and_strings() -> None:
    text = '{"a": "x // y", // note\n "b": /* one\ntwo */ 2, "c": "\\"/*\\""}'
    stripped = strip_comments(text)
    assert len(stripped) == len(text) and stripped.count("\n") == text.count("\n")
    assert loads_with_comments(text) == {"a": "x // y", "b": 2, "c": '"/*"'}


def test_byte_order_mark_and_lone_slash() -> None:
    assert loads_with_comments('\ufeff{"a": 1}') == {"a": 1}
    with pytest.raises(JsonWithCommentsError, match="line 1 column 7: invalid JSON"):
        loads_with_comments('{"a": / 1}')
