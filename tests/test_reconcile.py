"""Full reconciliation (``<dag_id>_reconcile``) on real MariaDB, run through ``dag.test()``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from cupid_airflow.core import reconcile as core
from cupid_airflow.core.codec import decode_value, encode_value
from cupid_airflow.core.reconcile_progress import PROGRESS_KEY
from tests.airflow_run import RunResult, run_dag
from tests.conftest import MySqlDatabase
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")


def reconcile(pair: Pair, **settings: Any) -> RunResult:
    pair.configure(reconcile={"schedule": "@daily", **settings})
    pair.receiver.clear_log()
    result = run_dag(f"{pair.dag_id}_reconcile")
    assert result.state == "success", result.task_states
    return result


def by_value(pair: Pair) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for body in pair.callbacks():
        assert body["byValue"] not in found, f"{body['byValue']} reported twice"
        found[body["byValue"]] = body
    return found


def seed(pair: Pair, rows: int) -> None:
    pair.add_source(*[(f"n{i:05d}", f"name {i}", f"{i}.50", None, None) for i in range(rows)])
    pair.add_destination(*[(f"n{i:05d}", f"name {i}", f"{i}.50", None, None) for i in range(rows)])


def test_finds_deletes_hand_edits_and_missing_rows_and_nothing_else(pair: Pair) -> None:
    seed(pair, 3000)
    pair.src.execute("DELETE FROM user WHERE number IN ('n00007', 'n02999')")  # deleted at the source only
    pair.des.execute("UPDATE user SET name = 'hand edit' WHERE number = 'n01500'")
    pair.des.execute("UPDATE user SET name = '' WHERE number = 'n00100'")
    pair.src.execute("UPDATE user SET name = NULL WHERE number = 'n00100'")  # NULL vs ''
    pair.des.execute("DELETE FROM user WHERE number = 'n02000'")
    pair.des.execute("INSERT INTO user (number, name) VALUES ('a-before-every-source-key', 'x'), ('z-after', 'y')")

    result = reconcile(pair, segmentRows=1000)
    found = by_value(pair)
    assert {k: e["type"] for k, e in found.items()} == {
        "n00007": 3, "n02999": 3, "a-before-every-source-key": 3, "z-after": 3,
        "n01500": 2, "n00100": 2, "n02000": 1,
    }  # fmt: skip
    gone = found["n00007"]
    assert gone["srcColumn"] is None and gone["desColumn"]["name"] == "name 7" and gone["desTable"] == "user"
    assert found["n00100"]["srcColumn"]["name"] is None and found["n00100"]["desColumn"]["name"] == ""
    assert found["n01500"]["diffColumns"] == ["name"]
    assert len(result.output("plan")[0]) == 3  # segments of ~1000 source rows, mapped
    assert len(result.output("reconcile")) == 3


def test_the_same_divergence_has_the_scan_dags_event_id(pair: Pair) -> None:
    seed(pair, 50)
    pair.des.execute("UPDATE user SET name = 'stale' WHERE number = 'n00010'")
    pair.run()
    scanned = {e["byValue"]: e["eventId"] for e in pair.callbacks()}
    reconcile(pair)
    assert {e["byValue"]: e["eventId"] for e in pair.callbacks()} == scanned


def test_every_row_different_and_an_empty_destination(pair: Pair) -> None:
    seed(pair, 2000)
    pair.des.execute("UPDATE user SET amount = '0'")
    reconcile(pair, segmentRows=1000)
    assert {e["type"] for e in by_value(pair).values()} == {2}
    assert len(pair.callbacks()) == 2000

    pair.des.execute("DELETE FROM user")
    reconcile(pair, segmentRows=1000)
    assert len(pair.callbacks()) == 2000 and {e["type"] for e in pair.callbacks()} == {1}


def test_identical_tables_are_checksummed_not_read(pair: Pair) -> None:
    seed(pair, 5000)
    result = reconcile(pair)
    assert pair.callbacks() == []
    assert result.output("reconcile") == [[]]


def test_renamed_columns_and_a_key_range(
    mysql_db: Callable[[str], MySqlDatabase], configs_dir: Path, httpserver: Any
) -> None:
    src, des = mysql_db("src"), mysql_db("des")
    src.execute(
        "CREATE TABLE items (id INT PRIMARY KEY, sku VARCHAR(20) UNIQUE, title VARCHAR(50), price DECIMAL(8,2))"
    )
    des.execute("CREATE TABLE catalog (code VARCHAR(20) PRIMARY KEY, label VARCHAR(50), cost VARCHAR(20))")
    src.executemany(
        "INSERT INTO items VALUES (%s, %s, %s, %s)", [(i, f"S{i:03d}", f"t{i}", f"{i}.00") for i in range(1, 201)]
    )
    des.executemany(
        "INSERT INTO catalog VALUES (%s, %s, %s)", [(f"S{i:03d}", f"t{i}", f"{i}.00") for i in range(1, 201)]
    )
    des.execute("UPDATE catalog SET cost = '9.99' WHERE code IN ('S010', 'S150')")
    httpserver.expect_request("/cb", method="POST").respond_with_data("ok")
    config = {
        "confirmSeconds": 0,  # reported at once: the reconcile's wait for the window is tested on its own
        "src": {"dsn": src.dsn, "table": "items", "byColumn": "sku", "update": False},
        "des": [
            {
                "dsn": des.dsn,
                "table": "catalog",
                "columns": {"sku": "code", "title": "label", "price": "cost"},
                "byColumn": "code",
                "callbackNotification": {"url": httpserver.url_for("/cb")},
                "reconcile": {"fromKey": "S100", "toKey": "S200"},
            }
        ],
    }
    (configs_dir / "items.json").write_text(json.dumps(config))
    httpserver.clear_log()
    result = run_dag("cupid_items_reconcile")
    assert result.state == "success", result.task_states
    bodies = [json.loads(r.get_data()) for r, _ in httpserver.log]
    assert [(b["byValue"], b["type"], b["diffColumns"]) for b in bodies] == [
        ("S150", 2, ["cost"])
    ]  # S010 is out of range
    assert bodies[0]["srcColumn"] == {"id": "150", "sku": "S150", "title": "t150", "price": "150.00"}


def test_report_only_writes_json_lines_and_calls_nobody(pair: Pair, tmp_path: Path) -> None:
    seed(pair, 100)
    pair.src.execute("DELETE FROM user WHERE number = 'n00050'")
    result = reconcile(pair, reportOnly=True, reportDir=str(tmp_path))
    assert pair.callbacks() == []
    (summary,) = result.output("reconcile")
    assert summary["events"] == {"1": 0, "2": 0, "3": 1}
    lines = Path(summary["report"]).read_text().splitlines()
    assert [json.loads(line)["byValue"] for line in lines] == ["n00050"]
    assert Path(summary["report"]).is_relative_to(tmp_path)
    assert "callback" not in {task for task, _ in result.task_states}


def test_airflow_dags_test_runs_a_full_pass(pair: Pair, tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The CLI a user runs by hand, in its own process: ``airflow dags test <dag_id>_reconcile``."""
    seed(pair, 2500)
    pair.src.execute("DELETE FROM user WHERE number = 'n00050'")
    pair.des.execute("UPDATE user SET amount = 0 WHERE number = 'n02400'")
    pair.configure(reconcile={"reportOnly": True, "reportDir": str(tmp_path), "segmentRows": 1000})
    airflow = Path(sys.executable).parent / "airflow"
    dag_id = f"{pair.dag_id}_reconcile"
    result = subprocess.run(
        [str(airflow), "dags", "test", dag_id], env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / dag_id).iterdir()
    segments = sorted(run_dir.glob("segment-*.jsonl"))
    assert [s.name for s in segments] == ["segment-0000.jsonl", "segment-0001.jsonl", "segment-0002.jsonl"]
    events = [json.loads(line) for s in segments for line in s.read_text().splitlines()]
    assert sorted((e["byValue"], e["type"]) for e in events) == [("n00050", 3), ("n02400", 2)]
    assert pair.callbacks() == []


def test_min_age_leaves_rows_that_just_changed_to_replication(pair: Pair) -> None:
    seed(pair, 100)
    pair.configure(src={"updateColumn": "update_time"})
    pair.src.execute("UPDATE user SET name = 'just now', update_time = UTC_TIMESTAMP() WHERE number = 'n00001'")
    pair.src.execute("UPDATE user SET name = 'long ago' WHERE number = 'n00002'")
    reconcile(pair, minAgeSeconds=600)
    assert set(by_value(pair)) == {"n00002"}


def test_values_moved_between_keys_are_seen(pair: Pair) -> None:
    """The key is hashed with the columns: equal checksums cannot hide a swap, or a delete plus an
    insert of the same values under another key, when byColumn is not one of the mapped columns."""
    seed(pair, 100)
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["columns"] = {"name": "name", "amount": "amount"}
    pair.config_path.write_text(json.dumps(config))
    pair.des.execute("UPDATE user SET name = 'name 11', amount = '11.50' WHERE number = 'n00010'")
    pair.des.execute("UPDATE user SET name = 'name 10', amount = '10.50' WHERE number = 'n00011'")
    pair.src.execute("DELETE FROM user WHERE number = 'n00020'")
    pair.src.execute("INSERT INTO user (number, name, amount) VALUES ('n00020a', 'name 20', '20.50')")
    result = reconcile(pair)
    assert {k: e["type"] for k, e in by_value(pair).items()} == {"n00010": 2, "n00011": 2, "n00020": 3, "n00020a": 1}
    (summary,) = result.output("reconcile")
    assert len(summary) == 4


def test_min_age_waits_before_reporting_deletes(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete has no source row to date it: the task defers (the triggerer waits, not a worker)
    and reports only what is still different after minAgeSeconds."""
    from cupid_airflow.operators import reconcile as module

    seed(pair, 100)
    pair.src.execute("DELETE FROM user WHERE number IN ('n00005', 'n00006')")
    pair.src.execute("UPDATE user SET name = 'changed' WHERE number IN ('n00007', 'n00008')")  # no update column
    original, waited = module.ReconcileOperator.recheck, []

    def replication_catches_up(self: Any, context: Any, event: Any = None) -> Any:
        saved = context["task_state_store"].get(PROGRESS_KEY)
        waited.append(sorted(e["byValue"] for e in saved["events"]))
        pair.des.execute("DELETE FROM user WHERE number = 'n00005'")  # applied while the task waited
        pair.src.execute("DELETE FROM user WHERE number = 'n00008'")  # a new delete: not yet minAgeSeconds old
        return original(self, context, event)

    monkeypatch.setattr(module.ReconcileOperator, "recheck", replication_catches_up)
    reconcile(pair, minAgeSeconds=2)
    assert waited == [["n00005", "n00006", "n00007", "n00008"]]  # the pass saw all four, then waited
    assert {k: e["type"] for k, e in by_value(pair).items()} == {"n00006": 3, "n00007": 2}


def test_min_age_without_a_state_store_waits_in_the_task(pair: Pair) -> None:
    """Where the pass cannot be saved for a deferral (no store, or progress too big), the task
    itself waits out minAgeSeconds before the re-check."""
    from cupid_airflow.operators.reconcile import ReconcileOperator

    seed(pair, 100)
    pair.src.execute("DELETE FROM user WHERE number = 'n00005'")
    pair.configure(reconcile={"minAgeSeconds": 1})
    segment = {"lower": None, "upper": None}
    task = ReconcileOperator(task_id="reconcile", config_file=str(pair.config_path), segment=segment)
    started = time.monotonic()
    events = task.execute({})  # type: ignore[arg-type]
    assert [(e["byValue"], e["type"]) for e in events] == [("n00005", 3)]
    assert time.monotonic() - started >= 1.0


def test_min_age_rechecks_binary_keys(pair: Pair) -> None:
    """BINARY(16) keys that are not UTF-8 travel as ``0x<hex>`` in events; the re-check still finds them."""
    for db in (pair.src, pair.des):
        db.execute("CREATE TABLE bin (id BIGINT PRIMARY KEY AUTO_INCREMENT, k BINARY(16) NOT NULL UNIQUE, v INT)")
        db.execute("INSERT INTO bin (k, v) SELECT UNHEX(MD5(seq)), seq FROM seq_1_to_300")
    pair.des.execute("UPDATE bin SET v = -1 WHERE id = 42")
    config = json.loads(pair.config_path.read_text())
    config["src"].update(table="bin", byColumn="k")
    config["des"][0].update(table="bin", byColumn="k", columns={"v": "v"})
    pair.config_path.write_text(json.dumps(config))
    reconcile(pair, minAgeSeconds=1)  # no update column: deferred, then re-checked by key
    (event,) = pair.callbacks()
    assert event["type"] == 2 and event["srcColumn"]["v"] == "42" and event["desColumn"]["v"] == "-1"
    assert event["byValue"].startswith("0x")


def test_a_saved_pass_of_another_segment_is_not_reused(pair: Pair) -> None:
    """After a clear, plan may cut other segments: a saved pass for the old one must not stand in."""
    from cupid_airflow.operators import reconcile as module

    seed(pair, 100)
    pair.src.execute("DELETE FROM user WHERE number = 'n00050'")
    pair.configure(reconcile={"minAgeSeconds": 1})
    store = _Store()
    stale = {"segment": {"lower": None, "upper": "n00020"}, "position": "n00020", "events": [], "done": True,
             "stats": {"chunks": 1, "checksummed": 1, "read": 0, "rows": 20}, "found_at": 0.0}  # fmt: skip
    store.set(PROGRESS_KEY, stale)
    task = module.ReconcileOperator(
        task_id="reconcile", config_file=str(pair.config_path), segment={"lower": None, "upper": None}
    )
    with pytest.raises(TaskDeferred):  # it walked its own segment, found the delete and waits for it
        task.execute({"task_state_store": store})  # type: ignore[arg-type]
    assert [e["byValue"] for e in store.get(PROGRESS_KEY)["events"]] == ["n00050"]


def test_min_age_reads_a_text_update_column(pair: Pair) -> None:
    seed(pair, 100)
    pair.src.execute("ALTER TABLE user ADD COLUMN touched VARCHAR(19) NOT NULL DEFAULT '2000-01-01 00:00:00'")
    pair.configure(src={"updateColumn": "touched", "updateTimeFormate": "Y-m-d H:i:s", "timezone": "Asia/Shanghai"})
    now = "DATE_FORMAT(CONVERT_TZ(UTC_TIMESTAMP(), '+00:00', '+08:00'), '%Y-%m-%d %H:%i:%s')"
    pair.src.execute(f"UPDATE user SET name = 'just now', touched = {now} WHERE number = 'n00001'")
    pair.src.execute("UPDATE user SET name = 'long ago' WHERE number = 'n00002'")
    reconcile(pair, minAgeSeconds=600)  # every difference is dated: no waiting
    assert set(by_value(pair)) == {"n00002"}


class _Store:
    """The task state store's interface, JSON round-tripped as Airflow stores it."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_a_failed_try_resumes_where_it_stopped_with_what_it_found(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    from cupid_airflow.operators import reconcile as module

    seed(pair, 20_000)
    pair.des.execute("UPDATE user SET name = 'stale' WHERE MOD(CAST(SUBSTRING(number, 2) AS UNSIGNED), 997) = 0")
    pair.src.execute("DELETE FROM user WHERE MOD(CAST(SUBSTRING(number, 2) AS UNSIGNED), 1999) = 0")
    pair.configure(reconcile={"segmentRows": 100_000, "targetQuerySeconds": 0.000001})  # 1,000-row chunks
    monkeypatch.setattr(core, "SAVE_EVERY_SECONDS", 0)  # save after every chunk
    segment = {"lower": None, "upper": None}

    def task() -> Any:
        return module.ReconcileOperator(task_id="reconcile", config_file=str(pair.config_path), segment=segment)

    clean = task().execute({})  # type: ignore[arg-type]
    assert {e["type"] for e in clean} == {2, 3} and len(clean) > 20

    visited: list[Any] = []
    original = core.SegmentWalk.read_chunk
    resumed = False

    def crashing(self: Any, pool: Any, lower: Any, upper: Any) -> Any:
        visited.append(lower)
        if len(visited) == 6 and not resumed:
            raise ConnectionError("the worker died")  # the try ends mid-segment
        return original(self, pool, lower, upper)

    monkeypatch.setattr(core.SegmentWalk, "read_chunk", crashing)
    store = _Store()
    with pytest.raises(ConnectionError):
        task().execute({"task_state_store": store})  # type: ignore[arg-type]
    saved = store.get(PROGRESS_KEY)
    assert saved["position"] == visited[-1] and saved["events"]  # stopped after the last finished chunk

    visited.clear()
    resumed = True
    again = task().execute({"task_state_store": store})  # type: ignore[arg-type]
    assert visited[0] == saved["position"]  # it did not start again from the beginning
    assert sorted(e["eventId"] for e in again) == sorted(e["eventId"] for e in clean)  # nothing lost or doubled
    assert store.get(PROGRESS_KEY) is None  # done: a later clear runs a full pass again


def test_datetime_and_binary_keys_survive_saved_progress(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments and saved positions are JSON: DATETIME(6) keys (and BINARY UUIDs) go through it."""
    from cupid_airflow.operators import reconcile as module

    for db in (pair.src, pair.des):
        db.execute("CREATE TABLE ev (id BIGINT PRIMARY KEY AUTO_INCREMENT, at DATETIME(6) NOT NULL UNIQUE, v INT)")
        db.execute(
            "INSERT INTO ev (at, v) SELECT TIMESTAMPADD(MICROSECOND, seq * 1001, '2026-01-01'), seq FROM seq_1_to_5000"
        )
    pair.des.execute("UPDATE ev SET v = -1 WHERE id IN (17, 4444)")
    config = json.loads(pair.config_path.read_text())
    config["src"].update(table="ev", byColumn="at")
    config["des"][0].update(table="ev", byColumn="at", columns={"v": "v"})
    pair.config_path.write_text(json.dumps(config))
    pair.configure(reconcile={"segmentRows": 2000, "targetQuerySeconds": 0.000001})  # 1,000-row chunks
    monkeypatch.setattr(core, "SAVE_EVERY_SECONDS", 0)
    common: dict[str, Any] = {"config_file": str(pair.config_path)}
    segments = json.loads(json.dumps(module.ReconcilePlanOperator(task_id="plan", **common).execute({})))  # type: ignore[arg-type]
    assert len(segments) == 3 and segments[1]["lower"]["datetime"].startswith("2026-01-01T00:00:02")
    store, found = _Store(), []
    for segment in segments:
        task = module.ReconcileOperator(task_id="reconcile", segment=segment, **common)
        found += task.execute({"task_state_store": store})  # type: ignore[arg-type]
    assert sorted(e["desColumn"]["v"] for e in found) == ["-1", "-1"] and len(found) == 2
    assert sorted(e["srcColumn"]["v"] for e in found) == ["17", "4444"]

    uuid = bytes(range(16))
    assert decode_value(json.loads(json.dumps(encode_value(uuid)))) == uuid


def test_a_recheck_whose_saved_pass_is_gone_walks_the_segment_again(pair: Pair) -> None:
    """The pass saved for the minAgeSeconds wait expired or was deleted: redo it, do not fail for good."""
    from cupid_airflow.operators.reconcile import ReconcileOperator

    seed(pair, 100)
    pair.src.execute("DELETE FROM user WHERE number = 'n00005'")
    pair.configure(reconcile={"minAgeSeconds": 1})
    task = ReconcileOperator(
        task_id="reconcile", config_file=str(pair.config_path), segment={"lower": None, "upper": None}
    )
    with pytest.raises(TaskDeferred):  # walked again, found the delete, and waits for it once more
        task.recheck({"task_state_store": _Store()})  # type: ignore[arg-type]  # nothing saved
    events = task.recheck({})  # type: ignore[arg-type]  # no store at all: walks and waits in the task
    assert [(e["byValue"], e["type"]) for e in events] == [("n00005", 3)]


@pytest.mark.parametrize("run_id", ["..", "../../escaped", "a/../../b", "/abs/path", ".hidden", "x\\..\\y"])
def test_hostile_run_ids_keep_reports_inside_report_dir(tmp_path: Path, run_id: str) -> None:
    """A run id comes from whoever triggers the run (``dags trigger --run-id``; dag.test() takes none):
    ``..`` and ``/`` in it must not move the report out of reportDir."""
    from types import SimpleNamespace

    from airflow.sdk import DAG

    from cupid_airflow.operators.reconcile import ReconcileOperator
    from tests.conftest import sample_config

    reports, config = tmp_path / "deep" / "reports", tmp_path / "user.json"
    config.write_text(json.dumps(sample_config(reconcile={"reportOnly": True, "reportDir": str(reports)})))
    with DAG("cupid_user_reconcile", schedule=None):
        task = ReconcileOperator(task_id="reconcile", config_file=str(config), segment={"lower": None, "upper": None})
    event = {"type": 3, "byValue": "n1"}
    hostile = {"run_id": run_id, "ti": SimpleNamespace(map_index=0)}
    plain = {"run_id": run_id.replace("/", "_").replace(".", "_"), "ti": SimpleNamespace(map_index=0)}

    path = task._write_report(hostile, task.settings, [event])  # type: ignore[arg-type]
    other = task._write_report(plain, task.settings, [event])  # type: ignore[arg-type]

    assert path.resolve().parent.parent == (reports / "cupid_user_reconcile").resolve()
    assert path.parent != other.parent  # a cleaned name never shares a folder with the id it looks like
    assert json.loads(path.read_text()) == event
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("deep/reports/")] == ["user.json"]
