"""``updateTimeFormate``: write datetimes the way a VARCHAR time column stores them.

cupid-go formats with a Go layout (``2006-1-2 15:04:05``, its default) while its README shows
PHP's ``Y-m-d H:i:s``; users have both in their configs, so both are understood. A format with a
digit in it is a Go layout (Go layouts are written with the reference time's digits), anything
else is a PHP ``date()`` format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["TimeFormat", "TimeFormatError", "parse_time_format"]

_Part = Callable[[datetime], str]


class TimeFormatError(ValueError):
    """A layout with a directive we cannot write."""


_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]  # fmt: skip
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _offset(dt: datetime, sep: str, zulu: bool) -> str:
    delta = dt.utcoffset()
    seconds = int(delta.total_seconds()) if delta is not None else 0
    if zulu and seconds == 0:
        return "Z"
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}{sep}{minutes:02d}"


def _hour12(dt: datetime) -> int:
    return dt.hour % 12 or 12


def _fraction(digits: int) -> _Part:
    return lambda dt: f"{dt.microsecond:06d}{'0' * max(0, digits - 6)}"[:digits]


def _trimmed_fraction(digits: int, sep: str) -> _Part:
    return lambda dt: (sep + _fraction(digits)(dt).rstrip("0")).rstrip(sep)


# Each directive: (what it writes, the field it sorts by or None, its fixed width or 0).
# Sort keys make "is this format lexicographically ordered?" answerable: see TimeFormat.sortable.
_Directive = tuple[_Part, str | None, int]

_GO: dict[str, _Directive] = {
    "January": (lambda dt: _MONTHS[dt.month - 1], None, 0),
    "Jan": (lambda dt: _MONTHS[dt.month - 1][:3], None, 0),
    "Monday": (lambda dt: _DAYS[dt.weekday()], None, 0),
    "Mon": (lambda dt: _DAYS[dt.weekday()][:3], None, 0),
    "MST": (lambda dt: dt.tzname() or "UTC", None, 0),
    "2006": (lambda dt: f"{dt.year:04d}", "year", 4),
    "06": (lambda dt: f"{dt.year % 100:02d}", None, 2),
    "01": (lambda dt: f"{dt.month:02d}", "month", 2),
    "1": (lambda dt: str(dt.month), None, 0),
    "02": (lambda dt: f"{dt.day:02d}", "day", 2),
    "_2": (lambda dt: f"{dt.day:2d}", None, 0),
    "2": (lambda dt: str(dt.day), None, 0),
    "002": (lambda dt: f"{dt.timetuple().tm_yday:03d}", None, 3),
    "15": (lambda dt: f"{dt.hour:02d}", "hour", 2),
    "03": (lambda dt: f"{_hour12(dt):02d}", None, 2),
    "3": (lambda dt: str(_hour12(dt)), None, 0),
    "04": (lambda dt: f"{dt.minute:02d}", "minute", 2),
    "4": (lambda dt: str(dt.minute), None, 0),
    "05": (lambda dt: f"{dt.second:02d}", "second", 2),
    "5": (lambda dt: str(dt.second), None, 0),
    "PM": (lambda dt: "PM" if dt.hour >= 12 else "AM", None, 0),
    "pm": (lambda dt: "pm" if dt.hour >= 12 else "am", None, 0),
    "-07:00": (lambda dt: _offset(dt, ":", False), None, 0),
    "-0700": (lambda dt: _offset(dt, "", False), None, 0),
    "Z07:00": (lambda dt: _offset(dt, ":", True), None, 0),
    "Z0700": (lambda dt: _offset(dt, "", True), None, 0),
}
_GO_BY_LENGTH = sorted(_GO, key=len, reverse=True)

_PHP: dict[str, _Directive] = {
    "Y": _GO["2006"],
    "y": _GO["06"],
    "m": _GO["01"],
    "n": _GO["1"],
    "d": _GO["02"],
    "j": _GO["2"],
    "H": _GO["15"],
    "G": (lambda dt: str(dt.hour), None, 0),
    "h": _GO["03"],
    "g": _GO["3"],
    "i": _GO["04"],
    "s": _GO["05"],
    "u": (_fraction(6), "fraction", 6),
    "v": (_fraction(3), "fraction", 3),
    "A": _GO["PM"],
    "a": _GO["pm"],
    "F": _GO["January"],
    "M": _GO["Jan"],
    "l": _GO["Monday"],
    "D": _GO["Mon"],
    "P": _GO["-07:00"],
    "O": _GO["-0700"],
    "T": _GO["MST"],
    "e": (lambda dt: str(dt.tzinfo) if dt.tzinfo else "UTC", None, 0),
    "U": (lambda dt: str(int(dt.timestamp())), None, 0),
}
_SORT_ORDER = ["year", "month", "day", "hour", "minute", "second", "fraction"]
_SAMPLE = datetime(2006, 11, 22, 15, 44, 55, 123456, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TimeFormat:
    """A compiled layout: ``format(dt)`` writes ``dt`` as the column stores it."""

    text: str
    style: str  # "go" or "php"
    parts: tuple[_Part | str, ...]
    sort_fields: tuple[str, ...]
    fixed_width: bool

    def format(self, dt: datetime) -> str:
        return "".join(p if isinstance(p, str) else p(dt) for p in self.parts)

    def matches(self, value: str) -> bool:
        """Whether ``value`` has this layout's shape: digits and letters where it writes them, its
        literals in place. Only a fixed-width layout can tell; others match anything."""
        if not self.fixed_width:
            return True
        sample = self.format(_SAMPLE)
        if len(value) != len(sample):
            return False
        for want, got in zip(sample, value, strict=True):
            if want.isdigit() or want.isalpha():
                if want.isdigit() != got.isdigit() or want.isalpha() != got.isalpha():
                    return False
            elif want != got:
                return False
        return True

    @property
    def sortable(self) -> bool:
        """True when string order equals time order (zero-padded year, month, day, ... in that order).

        Only then can ``BETWEEN`` on a VARCHAR column find a time window; ``2006-1-2`` (cupid's
        default) is not, since '2024-1-10' < '2024-1-9' as strings.
        """
        return (
            self.fixed_width
            and len(self.sort_fields) >= 3
            and list(self.sort_fields) == _SORT_ORDER[: len(self.sort_fields)]
        )


def parse_time_format(text: str) -> TimeFormat:
    if not text:
        raise TimeFormatError("empty format; expected a Go layout like '2006-01-02 15:04:05' or PHP 'Y-m-d H:i:s'")
    if any(c.isdigit() for c in text):
        return _compile(text, "go", _go_tokens(text))
    return _compile(text, "php", _php_tokens(text))


def _compile(text: str, style: str, tokens: list[_Directive | str]) -> TimeFormat:
    parts: list[_Part | str] = []
    sort_fields: list[str] = []
    fixed = True
    for token in tokens:
        if isinstance(token, str):
            if parts and isinstance(parts[-1], str):
                parts[-1] += token
            else:
                parts.append(token)
            continue
        part, field, width = token
        parts.append(part)
        if field is not None:
            sort_fields.append(field)
        elif width == 0:
            fixed = False
    return TimeFormat(text, style, tuple(parts), tuple(sort_fields), fixed)


def _go_tokens(text: str) -> list[_Directive | str]:
    tokens: list[_Directive | str] = []
    i = 0
    while i < len(text):
        if text[i] in ".," and i + 1 < len(text) and text[i + 1] in "09":
            j = i + 1
            while j < len(text) and text[j] == text[i + 1]:
                j += 1
            if j == len(text) or not text[j].isdigit():
                digits = j - i - 1
                # .000 always writes its digits; .999 trims trailing zeros (Go), which breaks sort order.
                trim = text[i + 1] == "9"
                sep = text[i]
                if trim:
                    tokens.append((_trimmed_fraction(digits, sep), None, 0))
                else:
                    tokens.append(sep)
                    tokens.append((_fraction(digits), "fraction", digits))
                i = j
                continue
        name = next((n for n in _GO_BY_LENGTH if text.startswith(n, i)), None)
        if name is None:
            tokens.append(text[i])
            i += 1
        else:
            tokens.append(_GO[name])
            i += len(name)
    return tokens


def _php_tokens(text: str) -> list[_Directive | str]:
    tokens: list[_Directive | str] = []
    chars = iter(text)
    for c in chars:
        if c == "\\":
            tokens.append(next(chars, ""))
        elif c in _PHP:
            tokens.append(_PHP[c])
        elif c.isalpha():
            raise TimeFormatError(
                f"PHP date character {c!r} in {text!r} is not supported; supported: "
                + " ".join(sorted(_PHP))
                + " (escape a literal letter with a backslash)"
            )
        else:
            tokens.append(c)
    return tokens
