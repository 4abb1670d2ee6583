"""The last failure alert of a DAG, so the same failure is not sent again for a while."""

from __future__ import annotations

from typing import TypedDict

from cupid_airflow.core.codec import DECODING_ERRORS, STATE_VERSION, Store
from cupid_airflow.names import alert_mark_key

__all__ = ["AlertMark", "read_alert_mark", "write_alert_mark"]


class AlertMark(TypedDict):
    """The last failure alert a DAG sent: the same failure is not sent again for a while."""

    version: int
    signature: str  # the task, the kind of alert and the error with its numbers blanked
    at: float  # epoch seconds


def read_alert_mark(store: Store, dag_id: str) -> AlertMark | None:
    data = store.get(alert_mark_key(dag_id), None)
    if not isinstance(data, dict) or data.get("version", STATE_VERSION) != STATE_VERSION:
        return None  # unreadable: better one alert too many than one too few
    try:
        return AlertMark(version=STATE_VERSION, signature=str(data["signature"]), at=float(data["at"]))
    except DECODING_ERRORS:
        return None


def write_alert_mark(store: Store, dag_id: str, signature: str, at: float) -> None:
    store.set(alert_mark_key(dag_id), AlertMark(version=STATE_VERSION, signature=signature, at=at))
