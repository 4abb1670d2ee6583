"""What a run's scan compares: the planners of new ids (:mod:`.inserts`) and of updated rows
(:mod:`.updates`). Each reads the pair's scan position, claims this run's share, cuts it into
partitions and returns a plan; the scan operator calls both and does the Airflow part (the
tally, a backlog's next run, a small run's compare)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ScanRun"]


@dataclass(frozen=True)
class ScanRun:
    """What a planner needs to know of the run it plans for."""

    run_id: str
    params: Mapping[str, Any]  # the run's params: start_id/end_id, since/until
    interval_start: datetime | None = None  # the run's data interval
    interval_end: datetime | None = None
    backfill: bool = False
    #: How the compares of earlier runs ended (True all succeeded, None still running, False
    #: otherwise), by run id: what decides whether their claims are settled.
    compare_outcomes: Callable[[list[str]], Mapping[str, bool | None]] = lambda run_ids: {}
