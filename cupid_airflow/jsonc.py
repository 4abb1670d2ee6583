"""JSON with ``//`` and ``/* */`` comments, as cupid-go's README writes its example config.

Comments are blanked out in place (newlines kept), so the standard library's parser reports the
line and column the user sees in their editor. Duplicate keys are errors, not last-one-wins.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JsonWithCommentsError", "loads_with_comments", "strip_comments"]


class JsonWithCommentsError(ValueError):
    """Text that is not JSON once its comments are removed."""


def strip_comments(text: str) -> str:
    """Replace every comment with spaces, leaving strings (``"http://x"``) and line numbers intact."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                line = text.count("\n", 0, i) + 1
                raise JsonWithCommentsError(f"line {line}: '/*' comment is never closed with '*/'")
            out.append("".join(ch if ch == "\n" else " " for ch in text[i : j + 2]))
            i = j + 2
        else:
            j = i
            while j < n and text[j] not in '"/':
                j += 1
            if j == i:  # a lone '/' that starts no comment: let json report it
                j += 1
            out.append(text[i:j])
            i = j
    return "".join(out)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonWithCommentsError(f"duplicate key {key!r} (each key may appear once in an object)")
        result[key] = value
    return result


def loads_with_comments(text: str) -> Any:
    try:
        return json.loads(strip_comments(text.removeprefix("\ufeff")), object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise JsonWithCommentsError(f"line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:  # thousands of nested [ or {: an error for this text, not a crash of the caller
        raise JsonWithCommentsError("arrays or objects are nested too deeply to be a config") from None
