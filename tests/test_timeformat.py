"""updateTimeFormate: Go layouts and PHP date() formats write a window bound as the column stores it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cupid_airflow.timeformat import TimeFormatError, parse_time_format

SHANGHAI = timezone(timedelta(hours=8), "CST")
MOMENT = datetime(2024, 3, 7, 9, 5, 4, 123456, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("layout", "style", "written", "sortable"),
    [
        ("2006-1-2 15:04:05", "go", "2024-3-7 09:05:04", False),  # cupid-go's default: not zero padded
        ("2006-01-02 15:04:05", "go", "2024-03-07 09:05:04", True),
        ("2006-01-02T15:04:05.000000Z07:00", "go", "2024-03-07T09:05:04.123456+08:00", False),  # offsets vary
        ("2006-01-02 15:04:05.000", "go", "2024-03-07 09:05:04.123", True),
        ("2006-01-02 15:04:05.999", "go", "2024-03-07 09:05:04.123", False),  # .999 trims zeros
        ("20060102150405", "go", "20240307090504", True),
        ("Jan _2 3:04PM MST", "go", "Mar  7 9:05AM CST", False),
        ("02/01/2006", "go", "07/03/2024", False),  # day first: not in time order
        ("Y-m-d H:i:s", "php", "2024-03-07 09:05:04", True),
        ("Y-m-d H:i:s.u", "php", "2024-03-07 09:05:04.123456", True),
        ("Y/n/j G:i", "php", "2024/3/7 9:05", False),
        ("D, d M Y H:i:s O", "php", "Thu, 07 Mar 2024 09:05:04 +0800", False),
        ("\\Y\\e\\a\\r: Y", "php", "Year: 2024", False),
        ("U", "php", str(int(MOMENT.timestamp())), False),
    ],
)
def test_formats(layout: str, style: str, written: str, sortable: bool) -> None:
    fmt = parse_time_format(layout)
    assert fmt.style == style
    assert fmt.format(MOMENT) == written
    assert fmt.sortable is sortable


def test_unsupported_php_letter() -> None:
    with pytest.raises(TimeFormatError, match=r"PHP date character 'W' in 'Y-W' is not supported"):
        parse_time_format("Y-W")
    with pytest.raises(TimeFormatError, match="empty format"):
        parse_time_format("")
