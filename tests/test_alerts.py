"""PushBear alerts, with a PushBear stand-in on loopback (the public service is the one thing mocked)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.airflow_run import load_dag, run_dag
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")

SENDKEY = "SCT-test-sendkey-4242"


@pytest.fixture
def pushbear(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, str]]]:
    """Alerts received by a PushBear stand-in (its own server), which pushbear_default points at."""
    alerts: list[dict[str, str]] = []

    def receive(request: Request) -> Response:
        alerts.append(dict(request.args))
        return Response(json.dumps({"code": 0, "message": ""}), content_type="application/json")

    server = HTTPServer(host="localhost", port=0, threaded=True)
    server.expect_request("/sub", method="GET").respond_with_handler(receive)
    server.start()
    connection = {"conn_type": "pushbear", "host": f"http://localhost:{server.port}"}
    monkeypatch.setenv("AIRFLOW_CONN_PUSHBEAR_DEFAULT", json.dumps(connection))
    yield alerts
    server.stop()


def with_sendkey(pair: Pair, **changes: Any) -> None:
    pair.configure(src={"pushbearSendKey": SENDKEY}, **changes)


def failing_then_ok(failures: int) -> Any:
    seen: dict[str, int] = {}

    def answer(request: Request) -> Response:
        event_id = request.headers["webhook-id"]
        seen[event_id] = seen.get(event_id, 0) + 1
        return Response("down", 500) if seen[event_id] <= failures else Response("ok")

    return answer


def test_callback_alert_at_the_third_failure_and_not_before(
    pair: Pair, pushbear: list[dict[str, str]], capfd: pytest.CaptureFixture[str]
) -> None:
    with_sendkey(pair, failureJobRetrySecond=1)
    pair.add_source(("a", "x", None, None, None), ("b", "y", None, None, None))
    pair.answer_with(failing_then_ok(3))

    result = pair.run()

    assert result.tries[("callback", 0)] == 4
    assert len(pushbear) == 1, pushbear
    alert = pushbear[0]
    assert alert["sendkey"] == SENDKEY
    assert alert["text"] == f"cupid: {pair.dag_id}.callback 失败 failed"
    assert f"- DAG: `{pair.dag_id}`" in alert["desp"]
    assert "- try: 3 of 16" in alert["desp"]
    assert "events waiting for delivery: 2" in alert["desp"]
    assert "CallbackDeliveryError: 2 of 2 events were not delivered" in alert["desp"]
    assert SENDKEY not in "".join(capfd.readouterr())


def test_final_failure_and_any_task_failure_alert(pair: Pair, pushbear: list[dict[str, str]]) -> None:
    with_sendkey(pair, callbackRetries=0)
    pair.src.execute("ALTER TABLE `user` DROP COLUMN bio")  # the compare query now fails
    pair.src.execute("INSERT INTO `user` (number, name) VALUES ('a', 'x')")

    result = run_dag(pair.dag_id)

    assert result.state == "failed" and result.task_states[("compare", 0)] == "failed"
    assert len(pushbear) == 1
    assert pushbear[0]["text"] == f"cupid: {pair.dag_id}.compare 失败 failed for good"
    assert "Unknown column" in pushbear[0]["desp"] and "- try: 1 of 3" in pushbear[0]["desp"]  # no retry spent


def test_an_alert_that_cannot_be_sent_never_fails_the_task(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_PUSHBEAR_DEFAULT", json.dumps({"conn_type": "pushbear", "host": "http://127.0.0.1:9"})
    )
    with_sendkey(pair, failureJobRetrySecond=1)
    pair.add_source(("a", "x", None, None, None))
    pair.answer_with(failing_then_ok(3))

    result = pair.run()  # asserts the run succeeded

    assert result.tries[("callback", 0)] == 4


def test_deadline_alert_through_the_callback_trigger(pair: Pair, pushbear: list[dict[str, str]]) -> None:
    """dag.test() never fires deadlines: run the DAG's own deadline callback as the triggerer does."""
    from airflow.triggers.callback import CallbackTrigger

    with_sendkey(pair, slaSeconds=30)
    dag = load_dag(pair.dag_id)
    deadline = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    assert deadline.interval.total_seconds() == 30
    callback = deadline.callback
    assert SENDKEY not in json.dumps(callback.kwargs)  # only the config path is stored with the deadline
    context = {
        "dag_run": {"dag_id": pair.dag_id, "dag_run_id": "scheduled__2026-01-01T00:00:00+00:00", "state": "running"},
        "deadline": {"id": "d1", "deadline_time": "2026-01-01T00:00:30+00:00"},
    }
    trigger = CallbackTrigger(callback_path=callback.path, callback_kwargs={**callback.kwargs, "context": context})

    async def run() -> list[Any]:
        return [event async for event in trigger.run()]

    events = asyncio.run(run())

    assert [e.payload["state"] for e in events] == ["running", "success"]
    assert len(pushbear) == 1
    assert pushbear[0]["text"] == f"cupid: {pair.dag_id} 超时 missed its deadline"
    assert "scheduled__2026-01-01T00:00:00+00:00" in pushbear[0]["desp"]
    assert pushbear[0]["sendkey"] == SENDKEY


def test_an_error_no_retry_can_fix_fails_at_once_with_the_alert(pair: Pair, pushbear: list[dict[str, str]]) -> None:
    """A column missing in the destination: the reconcile task (3 retries) and the callback task
    (15 retries) must not spend hours retrying what cannot change; one try, then the alert."""
    with_sendkey(pair, reconcile={})
    pair.add_source(("a", "x", None, None, None))
    pair.des.execute("ALTER TABLE `user` DROP COLUMN bio")

    result = run_dag(f"{pair.dag_id}_reconcile")

    assert result.task_states[("reconcile", 0)] == "failed" and result.tries[("reconcile", 0)] == 1
    assert len(pushbear) == 1
    assert pushbear[0]["text"] == f"cupid: {pair.dag_id}_reconcile.reconcile 失败 failed for good"
    assert "MySQL error 1054" in pushbear[0]["desp"] and "Unknown column" in pushbear[0]["desp"]


def test_an_http_connection_option_callbacks_cannot_honour_fails_at_once(
    pair: Pair, pushbear: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = {"conn_type": "http", "host": "localhost", "port": pair.receiver.port, "extra": {"stream": True}}
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_RECEIVER", json.dumps(connection))
    config = json.loads(pair.config_path.read_text())
    config["des"][0].update(httpConnId="cupid_receiver", callbackNotification={"url": "/cb"})
    pair.config_path.write_text(json.dumps(config))
    with_sendkey(pair)
    pair.add_source(("a", "x", None, None, None))

    result = run_dag(pair.dag_id)

    assert result.task_states[("callback", 0)] == "failed" and result.tries[("callback", 0)] == 1
    assert "HTTP connection 'cupid_receiver', extra 'stream' is not supported for callbacks" in pushbear[-1]["desp"]
    assert not pair.receiver.log  # nothing was sent with options cupid would have ignored


def test_a_database_error_names_the_side_file_and_server_never_the_password(
    pair: Pair, pushbear: list[dict[str, str]], capfd: pytest.CaptureFixture[str]
) -> None:
    import uuid

    user, password = f"cupid_{uuid.uuid4().hex[:8]}", "Pw-" + uuid.uuid4().hex
    pair.des.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    try:
        pair.des.execute(f"GRANT ALL ON `{pair.des.name}`.* TO '{user}'@'%'")
        config = json.loads(pair.config_path.read_text())
        config["des"][0]["dsn"] = f"{user}:{password}@tcp(127.0.0.1:3306)/{pair.des.name}?charset=utf8mb4"
        pair.config_path.write_text(json.dumps(config))
        with_sendkey(pair)
        pair.add_source(("a", "x", None, None, None))
        pair.des.execute("ALTER TABLE `user` DROP COLUMN bio")

        result = run_dag(pair.dag_id)
    finally:
        pair.des.execute(f"DROP USER '{user}'@'%'")

    assert result.task_states[("compare", 0)] == "failed"
    desp = pushbear[-1]["desp"]
    assert f"{pair.config_path}: des[0] table user on 127.0.0.1:3306/{pair.des.name}" in desp
    assert "Unknown column" in desp
    output = "".join(capfd.readouterr()) + json.dumps(pushbear)
    assert password not in output and password[3:9] not in output


def test_a_dag_failing_every_run_the_same_way_alerts_once(pair: Pair, pushbear: list[dict[str, str]]) -> None:
    """A config dropped in with wrong credentials or a missing column fails every scheduled run:
    page once (an hour), not every minute; a different failure alerts at once."""
    with_sendkey(pair)
    pair.add_source(("a", "x", None, None, None))
    pair.des.execute("ALTER TABLE `user` DROP COLUMN bio")

    for _ in range(2):
        failed = run_dag(pair.dag_id)
        assert failed.task_states[("compare", 0)] == "failed"  # the next run takes the claim over: same failure
    assert len(pushbear) == 1

    pair.des.execute("ALTER TABLE `user` DROP COLUMN name")  # another failure
    run_dag(pair.dag_id)
    assert len(pushbear) == 2 and "name" in pushbear[1]["desp"]


def test_a_config_with_sample_credentials_fails_for_good_at_its_first_try_and_pages_once(
    pair: Pair, pushbear: list[dict[str, str]], capfd: pytest.CaptureFixture[str]
) -> None:
    """The cupid-go README's sample DSN (root:123456) against a server that refuses it: the scan
    fails at its first try (no retry can fix a password) with one page naming the side and server;
    the next scheduled runs fail the same way without paging again."""
    with_sendkey(pair)
    config = json.loads(pair.config_path.read_text())
    config["src"]["dsn"] = f"root:123456@tcp(127.0.0.1:3306)/{pair.src.name}?charset=utf8"
    pair.config_path.write_text(json.dumps(config))

    for _ in range(2):
        result = run_dag(pair.dag_id)
        assert result.task_states[("scan", -1)] == "failed" and result.tries[("scan", -1)] == 1
    assert len(pushbear) == 1
    desp = pushbear[0]["desp"]
    assert "failed for good" in pushbear[0]["text"] and "Access denied for user 'root'" in desp
    assert f"src table user on 127.0.0.1:3306/{pair.src.name}" in desp
    assert "123456" not in "".join(capfd.readouterr()) + json.dumps(pushbear)
