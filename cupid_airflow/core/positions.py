"""Where a pair's scans are: the insert cursor (the last claimed id, the recent claims, the open
ranges and the id gaps watched for late commits) and the update high-water mark (where the last
update window ended, and the open windows). Both live in Airflow Variables; what a range or a
window needs before it counts as checked is :mod:`cupid_airflow.core.claims`'s."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypedDict

from cupid_airflow.core.codec import DECODING_ERRORS, STATE_VERSION, StateError, Store, check_version
from cupid_airflow.names import insert_cursor_key, update_mark_key

__all__ = [
    "InsertCursor",
    "UpdateMark",
    "read_insert_cursor",
    "read_update_mark",
    "read_update_state",
    "write_insert_cursor",
    "write_update_state",
]


class InsertCursor(TypedDict):
    """The last claimed source id, recent claims by run id (a retried scan gets its range back),
    and the open ranges: claimed, but not yet compared by a run whose compares all succeeded
    (see :mod:`cupid_airflow.core.claims`)."""

    version: int
    cursor: int | None  # None: nothing claimed yet, start at src.startId
    claims: dict[str, list[int]]  # run_id -> [after, upto]: ids after < id <= upto
    open: dict[str, list[list[int]]]  # run_id -> the [after, upto] ranges that run must still confirm
    gaps: list[list[float]]  # [lo, hi, first seen (epoch s)]: ids missing in a claim, watched for late commits


def read_insert_cursor(store: Store, dag_id: str) -> InsertCursor:
    key = insert_cursor_key(dag_id)
    data = store.get(key, None) or {}
    try:
        if not isinstance(data, dict):
            raise TypeError(f"holds {type(data).__name__}")
        check_version("insert cursor", data)
        claims = {str(k): [int(v[0]), int(v[1])] for k, v in (data.get("claims") or {}).items()}
        open_ranges = {str(k): [[int(a), int(b)] for a, b in v] for k, v in (data.get("open") or {}).items()}
        cursor = data.get("cursor")
        cursor = None if cursor is None else int(cursor)
        gaps = [[int(lo), int(hi), float(seen)] for lo, hi, seen in data.get("gaps") or []]
    except StateError:
        raise
    except DECODING_ERRORS as e:
        raise StateError(
            f'Variable {key} is not an insert cursor ({e}); expected {{"version": 1, "cursor": <last checked '
            'id>, "claims": {}, "open": {}}. Fix it in Admin -> Variables, or delete it to start again at '
            "src.startId"
        ) from None
    return InsertCursor(version=STATE_VERSION, cursor=cursor, claims=claims, open=open_ranges, gaps=gaps)


def write_insert_cursor(store: Store, dag_id: str, state: InsertCursor) -> None:
    store.set(insert_cursor_key(dag_id), {**state, "version": STATE_VERSION})


class UpdateMark(TypedDict):
    """Where the last scheduled update scan's window ended (UTC, ISO 8601), and the windows of runs
    that have not confirmed them yet (run_id -> [[since, until], ...], ISO 8601)."""

    version: int
    until: str | None
    open: dict[str, list[list[str]]]


def read_update_state(store: Store, dag_id: str) -> UpdateMark:
    key = update_mark_key(dag_id)
    data = store.get(key, None)
    if data is None:
        return UpdateMark(version=STATE_VERSION, until=None, open={})
    if isinstance(data, str):  # before versions: the bare ISO string
        data = {"until": data}
    try:
        if not isinstance(data, dict):
            raise TypeError(f"holds {type(data).__name__}")
        check_version("update high-water mark", data)
        until = data.get("until")
        if until is not None:
            until = _aware(datetime.fromisoformat(str(until))).isoformat()
        windows = {str(k): [[str(a), str(b)] for a, b in v] for k, v in (data.get("open") or {}).items()}
    except StateError:
        raise
    except DECODING_ERRORS as e:
        raise StateError(
            f'Variable {key} is not an update high-water mark ({e}); expected {{"version": 1, "until": '
            '<ISO 8601 time>, "open": {}}. Fix it in Admin -> Variables, or delete it (the next run then '
            "checks one schedule interval back)"
        ) from None
    return UpdateMark(version=STATE_VERSION, until=until, open=windows)


def read_update_mark(store: Store, dag_id: str) -> datetime | None:
    until = read_update_state(store, dag_id)["until"]
    return None if until is None else datetime.fromisoformat(until)


def write_update_state(store: Store, dag_id: str, state: UpdateMark) -> None:
    store.set(update_mark_key(dag_id), {**state, "version": STATE_VERSION})


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
