"""Callback delivery against real HTTP receivers on loopback, through real Airflow runs."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug import Request, Response

from cupid_airflow.signing import new_secret
from tests.airflow_run import load_dag, run_dag
from tests.conftest import MySqlDatabase
from tests.pairs import Pair, pair
from tests.test_alerts import pushbear

__all__ = ["pair", "pushbear"]  # the fixtures

pytestmark = pytest.mark.usefixtures("airflow_db")

EVENTS = 12


def missing_rows(pair: Pair, count: int = EVENTS) -> None:
    """``count`` source rows the destination lacks: one type-1 event each."""
    pair.add_source(*[(f"n{i:02d}", f"name {i}", None, None, None) for i in range(count)])


class Script:
    """A receiver that answers each event id's n-th delivery as ``answers(n, request)`` says."""

    def __init__(self, answers: Callable[[int, Request], Response]) -> None:
        self.answers = answers
        self.seen: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        event_id = request.headers["webhook-id"]
        assert json.loads(request.get_data())["eventId"] == event_id
        with self.lock:
            self.seen[event_id] += 1
            attempt = self.seen[event_id]
        response = self.answers(attempt, request)
        if 200 <= response.status_code < 300:
            with self.lock:
                self.accepted[event_id] += 1
        return response


def test_failing_receiver_gets_every_event_on_a_later_try_with_the_same_ids(pair: Pair) -> None:
    pair.configure(failureJobRetrySecond=1)
    missing_rows(pair)
    script = Script(lambda attempt, _: Response("busy", 500) if attempt <= 2 else Response("ok"))
    pair.answer_with(script)

    result = pair.run()

    assert result.tries[("callback", 0)] == 3
    assert len(script.accepted) == EVENTS and set(script.accepted.values()) == {1}
    assert set(script.seen.values()) == {3}  # the same ids on every try


def test_a_retry_resends_only_what_was_not_delivered(pair: Pair) -> None:
    pair.configure(failureJobRetrySecond=1)
    missing_rows(pair)
    rejected: set[str] = set()

    def answers(attempt: int, request: Request) -> Response:
        number = int(json.loads(request.get_data())["byValue"][1:])
        if attempt == 1 and number % 2:
            rejected.add(request.headers["webhook-id"])
            return Response("no", 503)
        return Response("ok")

    script = Script(answers)
    pair.answer_with(script)

    result = pair.run()

    assert result.tries[("callback", 0)] == 2
    assert len(rejected) == EVENTS // 2
    assert {i: n for i, n in script.seen.items() if n > 1} == dict.fromkeys(rejected, 2)
    assert len(script.accepted) == EVENTS and set(script.accepted.values()) == {1}
    assert result.output("callback") == [{"events": EVENTS, "delivered": EVENTS, "sent": EVENTS // 2}]


def test_retry_after_is_honoured_within_the_try(pair: Pair) -> None:
    missing_rows(pair, 4)
    script = Script(
        lambda attempt, _: Response("slow down", 429, headers={"Retry-After": "1"}) if attempt == 1 else Response("")
    )
    pair.answer_with(script)
    started = time.monotonic()

    result = pair.run()

    assert result.tries[("callback", 0)] == 1
    assert set(script.seen.values()) == {2} and len(script.accepted) == 4
    assert time.monotonic() - started >= 1


def test_gone_fails_the_task_for_good(pair: Pair) -> None:
    missing_rows(pair, 3)
    pair.answer_with(Script(lambda *_: Response("unsubscribed", 410)))

    result = run_dag(pair.dag_id)

    assert result.state == "failed"
    assert result.task_states[("callback", 0)] == "failed"
    assert result.tries[("callback", 0)] == 1  # no retries: the receiver will never take them


def test_timeouts_fail_the_try_and_the_retry_delivers(pair: Pair) -> None:
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["callbackNotification"]["timeoutSecond"] = 0.3
    config["failureJobRetrySecond"] = 1
    pair.config_path.write_text(json.dumps(config))
    missing_rows(pair, 4)

    def answers(attempt: int, request: Request) -> Response:
        if attempt == 1:
            time.sleep(1)
        return Response("ok")

    script = Script(answers)
    pair.answer_with(script)

    result = pair.run()

    assert result.tries[("callback", 0)] == 2
    assert len(script.accepted) == 4


def test_refused_connections_fail_fast_and_keep_the_events(pair: Pair) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["callbackNotification"]["url"] = f"127.0.0.1:{closed_port}/cb"
    config["callbackRetries"] = 0
    pair.config_path.write_text(json.dumps(config))
    missing_rows(pair, 40)
    started = time.monotonic()

    result = run_dag(pair.dag_id)

    assert result.state == "failed" and result.task_states[("callback", 0)] == "failed"
    assert time.monotonic() - started < 60
    assert len(result.output("compare")[0]) == 40  # the events wait in XCom for a clear


def test_signed_requests_verify_with_an_independent_implementation(pair: Pair) -> None:
    secret = new_secret()
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["callbackNotification"]["secret"] = secret
    pair.config_path.write_text(json.dumps(config))
    missing_rows(pair, 3)
    verifier = Webhook(secret)
    captured: list[tuple[bytes, dict[str, str]]] = []

    def answers(attempt: int, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        captured.append((request.get_data(), headers))
        verifier.verify(request.get_data(), headers)  # raises (-> HTTP 500) when the signature is wrong
        return Response("ok")

    pair.answer_with(Script(answers))
    result = pair.run()

    assert result.tries[("callback", 0)] == 1 and len(captured) == 3
    body, headers = captured[0]
    assert headers["webhook-signature"].startswith("v1,")
    tampered = body.replace(b'"type":1', b'"type":2')
    with pytest.raises(WebhookVerificationError):
        verifier.verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_secrets_never_reach_logs_xcom_or_docs(
    pair: Pair, mysql_db: Callable[[str], MySqlDatabase], capfd: pytest.CaptureFixture[str]
) -> None:
    password, sendkey, secret = "Pw-5up3r-s3cret-9", "SCT-sendkey-0042", new_secret()
    user = f"cupid_{pair.src.name.split('_')[2]}"
    pair.src.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    try:
        for db in (pair.src.name, pair.des.name):
            pair.src.execute(f"GRANT SELECT ON `{db}`.* TO '{user}'@'%'")
        config = json.loads(pair.config_path.read_text())
        for endpoint in (config["src"], config["des"][0]):
            endpoint["dsn"] = endpoint["dsn"].replace("root:@", f"{user}:{password}@")
        config["src"]["pushbearSendKey"] = sendkey
        config["des"][0]["callbackNotification"]["secret"] = secret
        pair.config_path.write_text(json.dumps(config))
        missing_rows(pair, 2)

        result = pair.run()
        output = capfd.readouterr()
    finally:
        pair.src.execute(f"DROP USER '{user}'@'%'")

    logs = output.out + output.err
    assert "Delivering 2 events" in logs  # the task logs were captured
    for value in (password, sendkey, secret):
        assert value not in logs
        assert value not in json.dumps(list(result.xcoms.values()))
    dag = load_dag(pair.dag_id)
    assert all(value not in (dag.doc_md or "") for value in (password, sendkey, secret))


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_to_another_host_delivers_nothing_there_and_fails_the_task(
    pair: Pair, status: int, capfd: pytest.CaptureFixture[str]
) -> None:
    elsewhere = HTTPServer(host="127.0.0.1", port=0)
    elsewhere.expect_request("/steal").respond_with_data("thanks")
    elsewhere.start()
    try:
        pair.configure(callbackRetries=0)
        missing_rows(pair, 3)
        location = f"http://127.0.0.1:{elsewhere.port}/steal?token=Rd1rectT0ken"
        pair.answer_with(lambda _: Response("moved", status, headers={"Location": location}))

        result = run_dag(pair.dag_id)
        logs = "".join(capfd.readouterr())
    finally:
        elsewhere.stop()

    assert result.task_states[("callback", 0)] == "failed"
    assert len(pair.receiver.log) == 3 and elsewhere.log == []  # no row, header or signature went there
    assert f"HTTP {status}: redirect to another host, http://127.0.0.1:{elsewhere.port}, never followed" in logs
    assert "Rd1rectT0ken" not in logs and "/steal" not in logs


@pytest.mark.parametrize(
    "url", ["http://{token}@{host}/cb", "http://cupid:{token}@{host}/cb", "{host}/cb?sig=x&token={token}"]
)
def test_a_token_in_the_callback_url_never_reaches_logs_alerts_or_dag_docs(
    pair: Pair, url: str, pushbear: list[dict[str, str]], capfd: pytest.CaptureFixture[str]
) -> None:
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    token = "Qz8wTokEn4uRlXv9"
    config = json.loads(pair.config_path.read_text())
    callback = config["des"][0]["callbackNotification"]
    callback["url"] = url.format(token=token, host=callback["url"].removesuffix("/cb"))
    config.update(callbackRetries=0)
    config["src"]["pushbearSendKey"] = "SCT-sendkey-for-this-test"
    pair.config_path.write_text(json.dumps(config))
    missing_rows(pair, 2)
    pair.answer_with(lambda _: Response("down", 500))

    result = run_dag(pair.dag_id)
    logs = "".join(capfd.readouterr())

    assert result.task_states[("callback", 0)] == "failed"
    assert "Delivering 2 events" in logs and "not delivered" in logs  # the task log was captured
    assert len(pushbear) == 1 and "CallbackDeliveryError" in pushbear[0]["desp"]
    with create_session() as session:
        serialized = session.scalars(select(SerializedDagModel).where(SerializedDagModel.dag_id == pair.dag_id)).all()
    assert serialized  # the run stored the DAG, docs included
    docs = load_dag(pair.dag_id).doc_md
    assert "callback: `" in docs
    places = {
        "task log": logs,
        "alert": json.dumps(pushbear, ensure_ascii=False),
        "DAG docs": docs,
        "serialized DAG": json.dumps([s.data for s in serialized], ensure_ascii=False),
    }
    for place, text in places.items():
        for piece in {token[i : i + 6] for i in range(len(token) - 5)}:
            assert piece not in text, f"{piece!r} of the token is in the {place}"


def test_a_receiver_echoing_its_request_shows_no_short_token_or_password_in_the_task_log(
    pair: Pair, capfd: pytest.CaptureFixture[str]
) -> None:
    """The masker skips query values under 8 characters, and never sees the Authorization header: a
    404 whose body echoes the request line and headers must still not put them in the task log."""
    token, password = "abc1234", "Pw7x/9q"
    config = json.loads(pair.config_path.read_text())
    callback = config["des"][0]["callbackNotification"]
    callback["url"] = f"http://cupid:Pw7x%2F9q@{callback['url'].removesuffix('/cb')}/cb?k={token}"
    config.update(callbackRetries=0)
    pair.config_path.write_text(json.dumps(config))
    missing_rows(pair, 2)
    seen: list[tuple[str, str]] = []

    def echo(request: Request) -> Response:
        seen.append((request.args["k"], request.authorization.password if request.authorization else ""))
        return Response(f"no route for {request.method} {request.full_path} {dict(request.headers)}", 404)

    pair.answer_with(echo)
    result = run_dag(pair.dag_id)
    logs = "".join(capfd.readouterr())

    assert result.task_states[("callback", 0)] == "failed"
    assert seen == [(token, password)] * 2  # what is hidden was sent
    assert "not delivered: HTTP 404: no route for POST /cb?k=***" in logs
    for secret in (token, password, "Y3VwaWQ6UHc3eC85cQ"):  # the last: base64 of cupid:Pw7x/9q
        assert not [p for p in {secret[i : i + 6] for i in range(len(secret) - 5)} if p in logs], secret
