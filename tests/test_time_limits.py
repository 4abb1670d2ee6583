"""Every wait on a database is bounded: a server that accepts and never answers, or stops answering
mid-session, fails the try (and retries take over) instead of hanging the task."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import MySQLdb
import pytest

import cupid_airflow.hooks.table as table_module
from cupid_airflow.dag_factory import DATABASE_TASK_TIMEOUT, RECONCILE_TASK_TIMEOUT
from cupid_airflow.hooks.connections import connection_from_dsn
from cupid_airflow.hooks.table import CupidMySqlHook
from tests.airflow_run import load_dag, run_dag
from tests.conftest import MYSQL, sample_config
from tests.pairs import Pair, pair
from tests.servers import FreezableProxy, SilentServer

__all__ = ["pair"]  # the fixture


def test_database_tasks_have_a_time_limit_and_callbacks_none(write_config: Callable[[str, Any], Path]) -> None:
    config = sample_config()
    config["src"]["update"] = True
    config["reconcile"] = {"minAgeSeconds": 600}
    write_config("limits.json", config)

    scan, reconcile = load_dag("cupid_limits"), load_dag("cupid_limits_reconcile")

    assert scan.task_dict["scan"].execution_timeout == DATABASE_TASK_TIMEOUT == timedelta(hours=2)
    assert scan.task_dict["compare"].partial_kwargs["execution_timeout"] == DATABASE_TASK_TIMEOUT
    assert reconcile.task_dict["plan"].execution_timeout == DATABASE_TASK_TIMEOUT
    limit = reconcile.task_dict["reconcile"].partial_kwargs["execution_timeout"]
    assert limit == RECONCILE_TASK_TIMEOUT + timedelta(seconds=600)  # the minAgeSeconds wait counts
    for dag in (scan, reconcile):
        assert dag.task_dict["callback"].partial_kwargs.get("execution_timeout") is None


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.timeout(300, method="thread")  # without a connect timeout the try blocks in C for ever
def test_a_source_that_accepts_and_never_answers_fails_each_try_in_bounded_time(pair: Pair) -> None:
    """No timeout in the DSN: the default connect timeout (10 s, the server's greeting included)
    ends each try, and the retries run out instead of one try hanging for ever."""
    with SilentServer() as server:
        pair.configure(
            src={"dsn": f"root:@tcp(127.0.0.1:{server.port})/{pair.src.name}?charset=utf8mb4"},
            failureJobRetrySecond=1,
        )
        started = time.monotonic()
        result = run_dag(pair.dag_id)
        elapsed = time.monotonic() - started

    assert result.task_states[("scan", -1)] == "failed"
    assert result.tries[("scan", -1)] == 3  # a hung server is worth a retry: it may come back
    assert server.accepted == 3
    assert elapsed < 120


def _frozen_query(hook: CupidMySqlHook, proxy: FreezableProxy) -> float:
    """Seconds until a query on a connection that went silent after logging in fails. The query
    runs in a thread: a read without a timeout blocks in C, where no pytest timeout reaches it."""
    conn = hook.get_conn()
    errors: list[BaseException] = []

    def query() -> None:
        try:
            conn.cursor().execute("SELECT 1")
        except BaseException as e:
            errors.append(e)

    try:
        proxy.freeze()
        started = time.monotonic()
        worker = threading.Thread(target=query, daemon=True)
        worker.start()
        worker.join(60)
        elapsed = time.monotonic() - started
        assert not worker.is_alive(), "the query still waits after 60 s"
    finally:
        proxy.close()  # ends the wait of a query that never timed out
        conn.close()
    assert len(errors) == 1 and isinstance(errors[0], MySQLdb.OperationalError), errors
    assert errors[0].args[0] == 2013  # lost connection during query
    return elapsed


@pytest.fixture
def proxy() -> Any:
    proxy = FreezableProxy((str(MYSQL["host"]), int(MYSQL["port"])))
    yield proxy
    proxy.close()


def test_a_server_that_stops_answering_mid_session_fails_the_query_at_the_read_timeout(
    proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_module, "READ_TIMEOUT_SECONDS", 1)  # the real default is 900 s
    hook = CupidMySqlHook(connection=connection_from_dsn(f"root:@tcp(127.0.0.1:{proxy.port})/mysql", "frozen"))

    assert _frozen_query(hook, proxy) < 30  # libmysqlclient may try a read up to 3 times


@pytest.mark.parametrize("via", ["dsn", "connection"])
def test_a_dsn_or_connection_read_timeout_wins_over_the_default(
    via: str, proxy: FreezableProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_module, "READ_TIMEOUT_SECONDS", 3600)
    if via == "dsn":
        dsn = f"root:@tcp(127.0.0.1:{proxy.port})/mysql?readTimeout=1s"
        hook = CupidMySqlHook(connection=connection_from_dsn(dsn, "frozen"))
    else:
        connection = {"conn_type": "mysql", "host": "127.0.0.1", "port": proxy.port, "login": "root",
                      "schema": "mysql", "extra": {"read_timeout": 1}}  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_CUPID_FROZEN", json.dumps(connection))
        hook = CupidMySqlHook(mysql_conn_id="cupid_frozen")

    assert _frozen_query(hook, proxy) < 30
