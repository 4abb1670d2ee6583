"""A worker killed in the middle of delivering: the next try sends what was not acknowledged, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from werkzeug import Request, Response

from tests.airflow_run import load_dag
from tests.conftest import REPO
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")

EVENTS = 600

CHILD = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(sys.argv[1], bundle_path=Path(sys.argv[1]).parent).dags[sys.argv[2]]
when = datetime(2026, 6, 1, tzinfo=timezone.utc)
dag.test(logical_date=when, run_after=when)
"""


def retry_killed_task(dag_id: str, task_id: str) -> None:
    """What the scheduler does with a dead worker's task: a new try of the same task instance."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    dag = load_dag(dag_id)
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).one()
        ti = next(t for t in run.get_task_instances(session=session) if t.task_id == task_id)
        assert ti.state == TaskInstanceState.RUNNING  # left behind by the killed worker
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        _run_task(ti=ti, task=dag.task_dict[task_id])


def test_the_retry_after_a_kill_delivers_the_rest_and_resends_only_the_unsaved(pair: Pair) -> None:
    pair.add_source(*[(f"n{i:04d}", "x", None, None, None) for i in range(EVENTS)])
    accepted: Counter[str] = Counter()
    lock = threading.Lock()

    def slow_ok(request: Request) -> Response:
        time.sleep(0.01)
        with lock:
            accepted[request.headers["webhook-id"]] += 1
        return Response("ok")

    pair.answer_with(slow_ok)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO / "dags" / "cupid_dags.py"), pair.dag_id],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while sum(accepted.values()) < EVENTS // 2:
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)  # the worker dies mid-delivery: no cleanup, no state saved on exit
    child.wait()
    before_kill = dict(accepted)
    assert 0 < len(before_kill) < EVENTS

    # What the scheduler does with a dead worker's task: a new try of the same task instance.
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    retry_killed_task(pair.dag_id, "callback")
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == pair.dag_id)).one()
        states = {t.task_id: (t.state, t.try_number) for t in run.get_task_instances(session=session)}
    assert states["callback"] == (TaskInstanceState.SUCCESS, 2)

    body_ids = {json.loads(r.get_data())["eventId"] for r, _ in pair.receiver.log}
    assert len(accepted) == EVENTS == len(body_ids)  # every event arrived
    resent = [event_id for event_id in before_kill if accepted[event_id] > 1]
    assert len(resent) < len(before_kill)  # the retry skipped what the first try had saved as delivered
    assert set(resent) <= set(before_kill)  # duplicates are events of the killed try, with their own ids


def test_a_reconcile_killed_mid_segment_resumes_on_its_next_try(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL a reconcile task after it saved progress; the next try starts at the saved key,
    keeps what the killed try found, and reports every divergence exactly once."""
    from airflow.models.dagrun import DagRun
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    rows = 400_000
    pair.src.execute(
        "INSERT INTO user (number, name) SELECT CONCAT('k', LPAD(seq, 7, '0')), CONCAT('n', seq) FROM seq_1_to_400000"
    )
    pair.des.execute(
        "INSERT INTO user (number, name) SELECT CONCAT('k', LPAD(seq, 7, '0')), "
        "IF(seq % 1000 = 0, 'stale', CONCAT('n', seq)) FROM seq_1_to_400000"
    )
    # Small chunks: the segment takes long enough to be killed after its first save.
    pair.configure(reconcile={"segmentRows": rows, "targetQuerySeconds": 0.000001})
    dag_id = f"{pair.dag_id}_reconcile"
    save_often = "import cupid_airflow.core.reconcile as r; r.SAVE_EVERY_SECONDS = 0\n"  # a save per chunk
    child = subprocess.Popen(
        [sys.executable, "-c", save_often + CHILD, str(REPO / "dags" / "cupid_dags.py"), dag_id],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    def saved() -> dict[str, object] | None:
        with create_session() as session:
            row = session.scalars(
                select(TaskStateStoreModel).where(
                    TaskStateStoreModel.dag_id == dag_id, TaskStateStoreModel.key == "reconcile_progress"
                )
            ).first()
            return json.loads(row.value) if row is not None else None

    deadline = time.monotonic() + 120
    while (progress := saved()) is None or not progress.get("events"):
        assert child.poll() is None and time.monotonic() < deadline, "the reconcile ended before it could be killed"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    progress = saved()
    assert progress is not None and progress["position"] is not None

    from cupid_airflow.core.reconcile import SegmentWalk

    lowers: list[object] = []
    original = SegmentWalk.read_chunk

    def recording(self: SegmentWalk, pool: Any, lower: Any, upper: Any) -> Any:
        lowers.append(lower)
        return original(self, pool, lower, upper)

    monkeypatch.setattr(SegmentWalk, "read_chunk", recording)  # the retry runs in this process
    retry_killed_task(dag_id, "reconcile")
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).one()
        ti = next(t for t in run.get_task_instances(session=session) if t.task_id == "reconcile")
        assert (ti.state, ti.try_number) == (TaskInstanceState.SUCCESS, 2)
        events = ti.xcom_pull(task_ids="reconcile", map_indexes=0, session=session)
    assert lowers[0] == progress["position"]  # the retry started where the killed try had saved, not at the top
    numbers = [e["byValue"] for e in events]
    assert sorted(numbers) == [f"k{i:07d}" for i in range(1000, rows + 1, 1000)]  # all 400, none twice
    assert saved() is None  # finished: the progress is gone
