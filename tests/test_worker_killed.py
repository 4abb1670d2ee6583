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
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    dag = load_dag(pair.dag_id)
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == pair.dag_id)).one()
        ti = next(t for t in run.get_task_instances(session=session) if t.task_id == "callback")
        assert ti.state == TaskInstanceState.RUNNING  # left behind by the killed worker
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        _run_task(ti=ti, task=dag.task_dict["callback"])
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == pair.dag_id)).one()
        states = {t.task_id: (t.state, t.try_number) for t in run.get_task_instances(session=session)}
    assert states["callback"] == (TaskInstanceState.SUCCESS, 2)

    body_ids = {json.loads(r.get_data())["eventId"] for r, _ in pair.receiver.log}
    assert len(accepted) == EVENTS == len(body_ids)  # every event arrived
    resent = [event_id for event_id in before_kill if accepted[event_id] > 1]
    assert len(resent) < len(before_kill)  # the retry skipped what the first try had saved as delivered
    assert set(resent) <= set(before_kill)  # duplicates are events of the killed try, with their own ids
