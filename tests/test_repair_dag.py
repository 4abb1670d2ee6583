"""Repair through the factory's DAGs (real MariaDB, a loopback receiver, ``dag.test()``): the fix
SQL a run writes, applied by ``mysql``, repairs exactly the divergent rows; ``apply`` mode repairs
them itself through its own write connection and counts what it did; a repair task SIGKILLed
mid-apply resumes on its retry without repeating or double-counting a fix. Approval through the
REST API is tests/test_e2e.py's (it needs the real scheduler and api-server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MYSQL, REPO
from tests.pairs import Pair, pair
from tests.test_worker_killed import CHILD, retry_killed_task

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")

HOSTILE = ['it\'s "quoted"', "back\\slash \\' \\\\", "emoji \U0001f600 \u00e9", "semi; -- x /* */", "y" * 65536]
MAPPED = "number, name, amount, born, bio"


def _repair(pair: Pair, tmp_path: Path, **repair: Any) -> None:
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["repair"] = {"dir": str(tmp_path / "repairs"), **repair}
    pair.config_path.write_text(json.dumps(config))


def _write_connection(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow connection to the destination database, apart from the config's read DSN."""
    uri = f"mysql://{MYSQL['user']}@{MYSQL['host']}:{MYSQL['port']}/{pair.des.name}?charset=utf8mb4"
    monkeypatch.setenv("AIRFLOW_CONN_CUPID_REPAIR_WRITE", uri)
    return "cupid_repair_write"


def _rows(pair: Pair, side: str) -> list[tuple[Any, ...]]:
    db = pair.src if side == "src" else pair.des
    return list(db.execute(f"SELECT {MAPPED} FROM `user` ORDER BY number"))


def _divergent(pair: Pair) -> None:
    """n0..n4 hostile values in the source (a 64 KB one in ``bio``); the destination misses n0 and n3 and garbles n1 and
    n4; n2 agrees."""
    pair.add_source(*[(f"n{i}", bio[:200], f"{i}.50", "2024-05-01 10:00:00", bio) for i, bio in enumerate(HOSTILE)])
    pair.add_destination(
        ("n1", "garbled", "1.50", "2024-05-01 10:00:00", HOSTILE[1]),
        ("n2", HOSTILE[2], "2.50", "2024-05-01 10:00:00", HOSTILE[2]),
        ("n4", HOSTILE[4][:200], "4.50", None, "garbled"),
    )


def test_the_fix_sql_of_a_run_applied_by_mysql_repairs_exactly_the_divergent_rows(pair: Pair, tmp_path: Path) -> None:
    pair.configure(inlineRows=1000)  # the scan compares; callback and repair take the events
    _repair(pair, tmp_path)  # mode "sql": the default
    _divergent(pair)

    result = pair.run()

    assert set(pair.by_number()) == {"n0", "n1", "n3", "n4"}  # callbacks as ever
    (summary,) = result.output("repair")
    assert summary["mode"] == "sql" and summary["kinds"] == {"insert": 2, "update": 2} and summary["planned"] == 4
    script = Path(summary["script"])
    assert script.parent.parent.name == pair.dag_id and script.name == "repair-0000.sql"
    assert _rows(pair, "des") != _rows(pair, "src")  # sql mode writes nothing
    with script.open("rb") as stdin:
        subprocess.run(
            ["mysql", "--binary-mode", "-h", MYSQL["host"], "-P", str(MYSQL["port"]), "-u", MYSQL["user"],
             pair.des.name], stdin=stdin, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    assert _rows(pair, "des") == [(*row[:2], str(row[2]), *row[3:]) for row in _rows(pair, "src")]
    assert "Repairs: 4 planned" in (result.note or "")

    again = pair.run(conf={"start_id": 1})  # everything compared again: nothing differs now
    assert pair.callbacks() == [] and again.task_states[("repair", -1)] == "skipped"


def test_apply_mode_repairs_through_its_write_connection_and_counts_what_it_did(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _repair(pair, tmp_path, mode="apply", connId=_write_connection(pair, monkeypatch), batchRows=3)
    _divergent(pair)

    result = pair.run()

    (summary,) = result.output("repair")
    assert summary["planned"] == 4 and summary["repaired"] == 4
    assert summary["skipped"] == summary["repair_failed"] == summary["moved"] == 0
    assert _rows(pair, "des") == [(*row[:2], str(row[2]), *row[3:]) for row in _rows(pair, "src")]
    assert "Repairs: 4 planned, 4 repaired" in (result.note or "")
    assert Path(summary["script"]).is_file()

    pair.run(conf={"start_id": 1})
    assert pair.callbacks() == []


def test_a_repair_killed_mid_apply_resumes_without_repeating_or_double_counting(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = 400
    _repair(pair, tmp_path, mode="apply", connId=_write_connection(pair, monkeypatch), batchRows=10,
            approveRows=rows)  # fmt: skip
    pair.add_source(*[(f"n{i:05d}", f"name {i}", None, None, None) for i in range(rows)])
    # each insert into the destination takes 10 ms: the apply lasts seconds, long enough to be killed
    pair.des.execute("CREATE TRIGGER slow BEFORE INSERT ON `user` FOR EACH ROW SET @cupid_slow = SLEEP(0.01)")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO / "dags" / "cupid_dags.py"), pair.dag_id],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while (count := pair.des.execute("SELECT COUNT(*) FROM `user`")[0][0]) < rows // 3:
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGKILL)  # mid-apply: no cleanup, the batch in flight may be committed or not
    child.wait()
    assert count < rows

    retry_killed_task(pair.dag_id, "repair")

    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == pair.dag_id)).one()
        ti = next(t for t in run.get_task_instances(session=session) if t.task_id == "repair")
        assert (str(ti.state), ti.try_number) == ("success", 2)
        where = (XComModel.dag_id == pair.dag_id, XComModel.task_id == "repair", XComModel.key == "return_value")
        summary = XComModel.deserialize_value(session.scalars(select(XComModel).where(*where)).one())
    summary = json.loads(summary) if isinstance(summary, str) else summary
    assert _rows(pair, "des") == _rows(pair, "src")  # every row repaired, none twice (number is UNIQUE)
    assert summary["repaired"] == rows and summary["planned"] == rows  # the killed try's work counted once
    assert summary["skipped"] == summary["repair_failed"] == 0


def test_a_scan_run_holds_a_plan_that_needs_approval_instead_of_asking(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan run waiting for an answer would hold the pair's next runs: past approveRows it
    applies nothing, writes the fix SQL and says so; only reconcile runs ask (tests/test_e2e.py)."""
    _repair(pair, tmp_path, mode="apply", connId=_write_connection(pair, monkeypatch), approveRows=3)
    _divergent(pair)
    before = _rows(pair, "des")

    result = pair.run()

    (summary,) = result.output("repair")
    assert summary["held"] == 4 and Path(summary["script"]).is_file()
    assert _rows(pair, "des") == before  # nothing applied
    assert "Repairs: 4 planned, 4 held for approval (not applied from a scan run)" in (result.note or "")
