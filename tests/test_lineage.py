"""OpenLineage: a real run reports its source and destination tables, and what it found, to a real
OpenLineage HTTP receiver on loopback, through apache-airflow-providers-openlineage's own listener."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from cupid_airflow.config import parse_config
from cupid_airflow.lineage import connection_table, endpoint_table, operator_lineage
from cupid_airflow.pair import SyncPair
from tests.conftest import REPO, sample_config
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

PASSWORD = "ol-S3cret-" + uuid.uuid4().hex[:8]


# ---------------------------------------------------------------------------- names


def test_names_follow_the_naming_spec_without_credentials() -> None:
    config = parse_config(json.dumps(sample_config()))
    src, des = endpoint_table(config.src), endpoint_table(config.des[0])
    assert (src.namespace, src.name) == ("mysql://127.0.0.1:3306", "app.user")
    assert (des.namespace, des.name) == ("mysql://127.0.0.1:3306", "replica.user")
    assert "s3cret" not in repr((src, des)) and "cupid" not in src.namespace

    assert connection_table("mysql", "db.internal", None, "shop", "orders").namespace == "mysql://db.internal:3306"
    assert connection_table("mysql", "db", 3307, "shop", "other.orders").name == "other.orders"
    assert connection_table("postgres", "pg", 5433, "shop", "orders") == (
        connection_table("postgres", "pg", 5433, "shop", "public.orders")
    )
    assert connection_table("postgres", "pg", None, "shop", "sales.orders").name == "shop.sales.orders"
    assert connection_table("postgres", "pg", None, "shop", "orders").namespace == "postgres://pg:5432"
    assert connection_table("sqlite", "/data/app.db", None, None, "user") == connection_table(
        "sqlite", "/data/app.db", 0, "", "user"
    )
    assert connection_table("sqlite", "/data/app.db", None, None, "user").namespace == "sqlite:///data/app.db"


def test_a_unix_socket_dsn_is_a_local_server() -> None:
    config = parse_config(
        json.dumps(sample_config(src={**sample_config()["src"], "dsn": "u:p@unix(/run/my.sock)/app"}))
    )
    assert endpoint_table(config.src).namespace == "mysql://localhost:3306"


def test_what_each_task_reports() -> None:
    pair = SyncPair(parse_config(json.dumps(sample_config())), 0, "cupid_x")
    reconcile = operator_lineage(pair, {"task": "reconcile", "rows": 9, "found": {"3": 4}})
    checks = reconcile.outputs[0].facets["dataQualityAssertions"].assertions
    assert [(a.assertion, a.success, a.actual) for a in checks] == [
        ("missing_rows", True, "0"),
        ("different_rows", True, "0"),
        ("gone_rows", False, "4"),
    ]
    assert reconcile.inputs[0].inputFacets["dataQualityMetrics"].rowCount == 9
    claimed = operator_lineage(pair, {"task": "scan", "max_id": 10})
    assert [d.name for d in claimed.inputs] == ["app.user"] and claimed.outputs == []
    assert operator_lineage(pair, {"task": "callback", "events": 3}).inputs == []
    failed = operator_lineage(pair, None)
    assert [d.name for d in failed.inputs + failed.outputs] == ["app.user", "replica.user"]
    assert not failed.inputs[0].inputFacets and not failed.outputs[0].facets


def test_cupid_imports_and_builds_dags_without_the_provider(tmp_path: Any) -> None:
    """The provider is an optional extra: nothing imports it at import time, and with it absent
    (imports of it fail) cupid still imports, builds its DAGs and names its tables."""
    (tmp_path / "a.json").write_text(json.dumps(sample_config()))
    script = f"""
import sys
import cupid_airflow.operators, cupid_airflow.lineage, cupid_airflow.dag_factory
# Airflow's provider discovery reads every installed provider's get_provider_info: no more.
discovery = {{"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}}
loaded = [m for m in sys.modules if m.startswith(("openlineage", "airflow.providers.openlineage"))]
assert not set(loaded) - discovery, loaded

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "openlineage" or name.startswith("airflow.providers.openlineage"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Absent())
from cupid_airflow.dag_factory import build_dags
from cupid_airflow.lineage import endpoint_table
from cupid_airflow.config import load_config
dags = build_dags(config_dir={str(tmp_path)!r})
assert sorted(dags) == ["cupid_a"], sorted(dags)
print(endpoint_table(load_config({str(tmp_path / "a.json")!r}).src))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mysql://127.0.0.1:3306" in result.stdout


# ---------------------------------------------------------------------------- a real run


@pytest.fixture
def lineage_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPServer]:
    """An OpenLineage HTTP receiver on loopback, and the provider's listener sending to it.

    The provider's plugin enables its listener only if a transport is configured when the plugin
    is first imported; in a test process that happened (disabled) long before. So the listener is
    added to the task SDK's listener manager here, after the plugins were loaded without the
    transport (later tests keep a disabled plugin), and removed after the test."""
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()  # plugins load now, with OpenLineage unconfigured
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/api/v1/lineage", method="POST").respond_with_data("")
    server.start()
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "http", "url": server.url_for("")}))
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "cupid-test")
    listener = get_openlineage_listener()
    listener.adapter._client = None  # built from the transport above on first use
    manager.add_listener(listener)
    try:
        yield server
    finally:
        if manager.pm.is_registered(listener):
            manager.pm.unregister(listener)
        listener.adapter._client = None
        server.clear()
        server.stop()


def _events(server: HTTPServer, job: str, event_type: str, count: int) -> list[dict[str, Any]]:
    """The ``event_type`` events of ``job`` once ``count`` of them arrived (the listener posts
    from a child process it waits for, up to [openlineage] execution_timeout)."""
    deadline = time.monotonic() + 15
    while True:
        events = [json.loads(request.get_data()) for request, _ in server.log]
        found = [e for e in events if e["job"]["name"] == job and e["eventType"] == event_type]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.usefixtures("airflow_db")
def test_a_run_reports_its_tables_and_findings(pair: Pair, lineage_receiver: HTTPServer) -> None:
    user = f"cupid_ol_{uuid.uuid4().hex[:8]}"
    pair.src.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'")
    try:
        for db in (pair.src, pair.des):
            pair.src.execute(f"GRANT ALL ON `{db.name}`.* TO '{user}'@'%'")
        config = json.loads(pair.config_path.read_text())
        for endpoint in (config["src"], config["des"][0]):
            endpoint["dsn"] = endpoint["dsn"].replace("root:@", f"{user}:{PASSWORD}@")
        pair.config_path.write_text(json.dumps(config))
        pair.add_source(*[(f"n{i}", f"name {i}", Decimal(i), None, None) for i in range(6)])
        pair.add_destination(
            *[(f"n{i}", f"name {i}", str(i), None, None) for i in range(3)],  # n3, n4 missing
            ("n5", "renamed", "5", None, None),  # different
        )

        result = pair.run()
    finally:
        pair.src.execute(f"DROP USER IF EXISTS '{user}'@'%'")

    compares = len(result.output("compare"))
    done = _events(lineage_receiver, f"{pair.dag_id}.compare", "COMPLETE", compares)
    assert len(done) == compares >= 1
    inputs = [d for e in done for d in e["inputs"]]
    outputs = [d for e in done for d in e["outputs"]]
    assert {(d["namespace"], d["name"]) for d in inputs} == {("mysql://127.0.0.1:3306", f"{pair.src.name}.user")}
    assert {(d["namespace"], d["name"]) for d in outputs} == {("mysql://127.0.0.1:3306", f"{pair.des.name}.user")}
    assert sum(d["inputFacets"]["dataQualityMetrics"]["rowCount"] for d in inputs) == 6
    found: dict[str, int] = {}
    for d in outputs:
        for a in d["facets"]["dataQualityAssertions"]["assertions"]:
            found[a["assertion"]] = found.get(a["assertion"], 0) + int(a["actual"])
            assert a["success"] is (a["actual"] == "0") and a["expected"] == "0"
    assert found == {"missing_rows": 2, "different_rows": 1}
    scan = _events(lineage_receiver, f"{pair.dag_id}.scan", "COMPLETE", 1)
    assert [d["name"] for d in scan[0]["inputs"]] == [f"{pair.src.name}.user"] and scan[0]["outputs"] == []

    sent = b"".join(request.get_data() for request, _ in lineage_receiver.log)
    assert PASSWORD.encode() not in sent
