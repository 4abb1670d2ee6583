"""The product on CeleryExecutor: the real scheduler, dag-processor, triggerer and api-server, and two
``airflow celery worker`` processes (Redis broker, the metadata database as result backend), real
MariaDB, real receivers on loopback.

Both workers run on this machine; each reports its own name as the task instances' hostname (as a
worker on a machine of its own reports its host), so the REST API says who ran what. Worker ``a``
serves the default queue and ``cupid-source``, worker ``b`` the default queue and
``cupid-callbacks``. One test, in order, because starting the deployment costs most of a minute:

1. A first pass over six partitions (the new DAG's first scheduled run): ``compare`` and
   ``callback`` task instances run on both workers, and every divergence is delivered exactly
   once. Meanwhile a second pair with ``queue``/``callbackQueue`` set runs its database tasks
   only on ``a`` and its callbacks only on ``b``.
2. A worker lost mid-task, twice in one run: worker ``a`` with every process it started is
   killed with SIGKILL while its ``compare`` tasks read (held by a lock on the destination), and,
   restarted, again while its ``callback`` tasks send (held at the receiver). The scheduler finds
   their task instances without a heartbeat (thresholds tuned down below; the README says how),
   fails them into retries that run elsewhere, the run succeeds and every divergence of the new
   rows arrives: no id range is skipped.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import MySqlDatabase
from tests.pairs import DES_TABLE, SRC_TABLE
from tests.stack import AirflowStack, Recorder, deployment, recording, wait_for, worker_component

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "cupid_celery"
ROUTED_DAG_ID = "cupid_celery_routed"
WORKERS = {"a": "default,cupid-source", "b": "default,cupid-callbacks"}
CHUNK = 500
FIRST = range(1, 3001)  # six partitions of the first pass
SECOND = range(3001, 5001)  # four partitions of the run that loses a worker
MISSING = {f"n{i}" for i in FIRST if i % 50 == 10}  # the replica never got them: type 1
CHANGED = {f"n{i}" for i in FIRST if i % 50 == 35}  # the replica garbled them: type 2
MISSING_LATER = {f"n{i}" for i in SECOND if i % 20 == 7}
#: Recovery from a lost worker is bounded by these (defaults 300 s, 10 s and 5 s): a task instance
#: whose supervisor stopped heartbeating for 20 s is failed into its retry within 2 s more. Healthy
#: supervisors heartbeat every 2 s, ten times within the timeout, so a loaded machine's pause does
#: not fail a live task.
#: A task the lost worker had taken but not started stays queued: it is requeued after
#: task_queued_timeout (default 600 s, checked every 120 s), here 45 s checked every 5 s. That
#: is also the longest a task may wait in the broker before it is requeued, and the lifetime of
#: its token: longer than any wait for a free slot in this test.
RECOVERY_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "45",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
}


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with recording() as recorder:
        yield recorder


@pytest.fixture
def routed_receiver() -> Iterator[Recorder]:
    with recording() as recorder:
        yield recorder


@pytest.fixture
def stack() -> Iterator[AirflowStack]:
    with deployment("cupid-e2e-celery-", RECOVERY_ENV, celery_workers=WORKERS) as stack:
        yield stack


def _rows(ids: range) -> list[tuple[int, str, str, str]]:
    return [(i, f"n{i}", f"name {i}", f"{i}.50") for i in ids]


def _insert(db: MySqlDatabase, rows: list[tuple[int, str, str, str]]) -> None:
    db.executemany("INSERT INTO user (id, number, name, amount) VALUES (%s, %s, %s, %s)", rows)


def _config(src: MySqlDatabase, des: MySqlDatabase, receiver: Recorder, dag_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "failureJobRetrySecond": 1,
        "schedule": "@daily",
        "watch": False,  # no runs but the first scheduled one and those this test triggers
        "chunkSize": CHUNK,
        "inlineRows": 0,  # always the mapped compare and callback tasks
        "confirmSeconds": 0,  # every divergence called back at once: this is about the workers
        **extra,
        "src": {"dsn": src.dsn, "table": "user", "byColumn": "number", "updateColumn": "update_time"},
        "des": [
            {
                "dsn": des.dsn,
                "table": "user",
                "columns": {"number": "number", "name": "name", "amount": "amount"},
                "byColumn": "number",
                # Long enough to outlast the gate: a held request is not a failed one.
                "callbackNotification": {"url": f"{receiver.url}/cupid/callback", "timeoutSecond": 90},
                "dagId": dag_id,
            }
        ],
    }


def _running_on(stack: AirflowStack, dag_id: str, run_id: str, task_id: str) -> dict[str, set[int]]:
    """Worker name -> map indexes of ``task_id`` running there."""
    found: dict[str, set[int]] = {}
    for ti in stack.task_instances(dag_id, run_id):
        if ti["task_id"] == task_id and ti["state"] == "running":
            found.setdefault(ti["hostname"], set()).add(ti["map_index"])
    return found


def _wait_running_on_both(stack: AirflowStack, run_id: str, task_id: str) -> dict[str, set[int]]:
    return wait_for(
        lambda: (hosts := _running_on(stack, DAG_ID, run_id, task_id)).keys() >= set(WORKERS) and hosts,
        150,
        f"{task_id} tasks running on both workers",
    )


def _lose_worker_a(stack: AirflowStack) -> float:
    """SIGKILL worker a with everything it started; when."""
    stack.kill_component(worker_component("a"))
    killed_at = time.time()
    # task runners included: nothing of a runs (SIGKILLed processes vanish within moments: on a
    # loaded machine not before the next line runs)
    wait_for(lambda: stack.component_processes(worker_component("a")) == [], 10, "every process of worker a gone")
    return killed_at


def _first_run(stack: AirflowStack, dag_id: str) -> str:
    runs = wait_for(lambda: stack.dag(dag_id) and stack.runs(dag_id), 120, f"a run of {dag_id}")
    return str(runs[0]["dag_run_id"])


def _hosts(tis: list[dict[str, Any]], task_id: str) -> set[str]:
    return {ti["hostname"] for ti in tis if ti["task_id"] == task_id}


def test_celery_workers_share_the_work_and_a_lost_worker_loses_nothing(
    stack: AirflowStack,
    receiver: Recorder,
    routed_receiver: Recorder,
    mysql_db: Callable[[str], MySqlDatabase],
) -> None:
    src, des = mysql_db("src"), mysql_db("des")
    src.execute(SRC_TABLE)
    des.execute(DES_TABLE)
    rows = _rows(FIRST)
    _insert(src, rows)
    copied = [(i, n, f"{name} (garbled)" if n in CHANGED else name, a) for i, n, name, a in rows if n not in MISSING]
    _insert(des, copied)
    stack.start()
    # 1. The first scheduled run of each new DAG (@daily, no catchup: the last whole day's run)
    # is the first pass. Its compare tasks wait on a lock of the destination table, its callbacks
    # at the receiver, until both workers run some: which worker takes what is up to Celery.
    receiver.gate.clear()
    lock = des.hold_write_lock("user")
    try:
        (stack.configs / "celery.json").write_text(json.dumps(_config(src, des, receiver, DAG_ID)))
        routed = _config(
            src, des, routed_receiver, ROUTED_DAG_ID,
            queue="cupid-source", callbackQueue="cupid-callbacks", chunkSize=len(FIRST),
        )  # fmt: skip
        (stack.configs / "routed.json").write_text(json.dumps(routed))
        first, routed_first = (_first_run(stack, dag_id) for dag_id in (DAG_ID, ROUTED_DAG_ID))
        _wait_running_on_both(stack, first, "compare")
    finally:
        lock.close()  # also on failure: the database's drop would wait on the lock
    both = _wait_running_on_both(stack, first, "callback")
    receiver.gate.set()
    run = stack.wait_run_done(DAG_ID, first, 120)
    assert run["state"] == "success", stack.log_tail()
    tis = stack.task_instances(DAG_ID, first)
    assert len([ti for ti in tis if ti["task_id"] == "compare"]) == len(FIRST) // CHUNK
    assert _hosts(tis, "compare") == set(WORKERS)
    assert _hosts(tis, "callback") == set(WORKERS), both
    assert set(receiver.by_value(1)) == MISSING
    assert set(receiver.by_value(2)) == CHANGED
    assert receiver.posts == len(MISSING) + len(CHANGED)  # each divergence once: nothing sent twice

    # The routed pair: its database tasks on the source queue's worker, its callbacks on the other.
    routed_run = stack.wait_run_done(ROUTED_DAG_ID, routed_first, 120)
    assert routed_run["state"] == "success", stack.log_tail()
    routed_tis = stack.task_instances(ROUTED_DAG_ID, routed_first)
    assert {(ti["task_id"], ti["queue"], ti["hostname"]) for ti in routed_tis} == {
        ("scan", "cupid-source", "a"),
        ("compare", "cupid-source", "a"),
        ("callback", "cupid-callbacks", "b"),
    }
    assert set(routed_receiver.by_value(1)) == MISSING
    assert set(routed_receiver.by_value(2)) == CHANGED

    # 2. New rows, most copied. Worker a is lost twice in one run: while its compare tasks read
    #    (held by the destination lock), and, restarted as a supervisor would, while its callback
    #    tasks send (held at the receiver).
    later = _rows(SECOND)
    _insert(src, later)
    _insert(des, [row for row in later if row[1] not in MISSING_LATER])
    receiver.gate.clear()
    lock = des.hold_write_lock("user")
    try:
        stack.cli("dags", "trigger", DAG_ID, "--run-id", "lost_worker")
        compares = _wait_running_on_both(stack, "lost_worker", "compare")
        first_kill = _lose_worker_a(stack)
    finally:
        lock.close()
    stack.start_component(worker_component("a"))
    wait_for(stack.workers_up, 120, "worker a back")
    callbacks_running = _wait_running_on_both(stack, "lost_worker", "callback")
    wait_for(lambda: receiver.held > 0, 30, "callback requests held at the receiver")
    second_kill = _lose_worker_a(stack)
    receiver.gate.set()
    run = stack.wait_run_done(DAG_ID, "lost_worker", 240)
    assert run["state"] == "success", stack.log_tail()

    tis = {(t["task_id"], t["map_index"]): t for t in stack.task_instances(DAG_ID, "lost_worker")}
    assert len([key for key in tis if key[0] == "callback"]) == len(SECOND) // CHUNK
    for index in compares["a"]:  # failed without a heartbeat; the retry re-read the partition
        assert tis[("compare", index)]["try_number"] == 2, tis[("compare", index)]
    for index in callbacks_running["a"]:  # the retry ran on the worker that was not lost
        assert (tis[("callback", index)]["try_number"], tis[("callback", index)]["hostname"]) == (2, "b")
    assert set(receiver.by_value(1)) == MISSING | MISSING_LATER  # no id range skipped
    assert set(receiver.by_value(2)) == CHANGED
    # A repeat is only ever a retry of the same event (same webhook-id), never a second event per row.
    per_row = Counter(e["byValue"] for e in receiver.events.values())
    assert max(per_row.values()) == 1
    for task_id, killed_at, lost in (
        ("compare", first_kill, compares["a"]),
        ("callback", second_kill, callbacks_running["a"]),
    ):
        again = max(datetime.fromisoformat(tis[(task_id, i)]["start_date"]).timestamp() - killed_at for i in lost)
        print(f"lost worker: {len(lost)} running {task_id} task(s) ran again {again:.1f} s after the kill")
    print(f"lost worker: the run was over {time.time() - second_kill:.0f} s after the second kill")

    stopped = stack.stop()
    assert all(code is not None for code in stopped.values()), stopped
    assert stack.leftover_processes() == []
