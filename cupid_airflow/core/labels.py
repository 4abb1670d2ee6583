"""What a mapped task is called in the UI once it ran (its ``map_index_template``):
``ids 1..200,000``, ``update_time 2026-11-28T10:00:00..2026-11-28T11:00:00``, ``5 carried
events``, ``number n1..n50000``."""

from __future__ import annotations

from typing import Any

from cupid_airflow.core.events import read_carried_events
from cupid_airflow.core.partitions import read_partition

__all__ = ["LABEL_MAX_LEN", "partition_label", "segment_label"]

#: Longest label of a mapped task instance (``map_index_template``; Airflow stores 250 characters).
LABEL_MAX_LEN = 120


def _bound(value: Any) -> str:
    text = "" if value is None else str(next(iter(value.values())) if isinstance(value, dict) else value)
    return text[:40]


def partition_label(data: Any) -> str:
    """What a mapped ``compare`` task reads, as its name in the UI: ``ids 1..200,000``,
    ``update_time 2026-11-28T10:00:00..2026-11-28T11:00:00``, ``5 carried events``."""
    carried = read_carried_events(data)
    if carried is not None:
        return f"{len(carried):,} carried events"
    part = read_partition(data)
    if part["kind"] == "ids":
        return f"ids {part['after'] + 1:,}..{part['upto']:,}"
    return f"{part['column']} {_bound(part['since'])}..{_bound(part['until'])}"[:LABEL_MAX_LEN]


def segment_label(column: str, segment: Any) -> str:
    """A reconcile segment as its task's name in the UI: ``number n1..n50000`` (``..`` open ends)."""
    return f"{column} {_bound(segment.get('lower'))}..{_bound(segment.get('upper'))}"[:LABEL_MAX_LEN]
