"""What a run found, where Airflow users look: the run note the listener writes, and the cupid
view's figures and page, from real runs (real MariaDB, a loopback receiver, ``dag.test()``,
Airflow's metadata database). The view in a real browser on a real api-server, with its auth, is
in tests/test_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
from sqlalchemy import select
from werkzeug import Response

from cupid_airflow.core.drift import RunFigures, run_note
from cupid_airflow.core.state import TALLY_KEY
from cupid_airflow.plugins.drift_data import load_page
from cupid_airflow.plugins.drift_view import render_page
from cupid_airflow.plugins.run_notes import write_run_note
from tests.airflow_run import run_dag
from tests.pairs import Pair, pair
from tests.test_inline_runs import divergent

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_a_run_note_says_what_the_run_found_and_delivered(pair: Pair, configs_dir: Path) -> None:
    divergent(pair)  # n3 different, n4 and n5 missing
    (configs_dir / "broken.json").write_text('{"src": {}}')

    result = pair.run()

    assert result.note == (
        "cupid: 5 source rows compared; found 2 missing, 1 different (type 1/2/3: 2/1/0). Callbacks: 3 delivered."
    )
    tallies = {k[0]: v for k, v in result.other_xcoms.items() if k[2] == TALLY_KEY}
    assert tallies["scan"] == {"version": 1, "task": "scan", "max_id": 5, "cursor": 5}
    assert tallies["compare"] == {"version": 1, "task": "compare", "rows": 5, "found": {"1": 2, "2": 1}}
    assert tallies["callback"] == {"version": 1, "task": "callback", "events": 3, "delivered": 3, "failed": 0}

    # the view, from Airflow's state alone: the pair's figures and the broken config
    page = load_page_now()
    view = next(p for p in page["pairs"] if p["dag_id"] == pair.dag_id)
    assert (view["insert_cursor"], view["source_max_id"], view["backlog"]) == (5, 5, 0)
    assert view["window"]["found"] == {"1": 2, "2": 1, "3": 0} and view["window"]["rows"] == 5
    assert view["callbacks"] == {"delivered": 3, "waiting": 0, "failed": 0}
    assert view["last_run"]["run_id"] == result.run_id and view["last_run"]["state"] == "success"
    assert view["config"] == pair.config_path.name and view["src"].endswith(".user")
    broken = [b for b in page["broken_configs"] if b["config"] == "broken.json"]
    assert broken and broken[0]["error"] == "src.table: required key is missing"


def test_a_failed_run_notes_what_was_not_delivered_and_the_view_counts_it(pair: Pair) -> None:
    divergent(pair)
    pair.configure(callbackRetries=0)
    pair.answer_with(lambda request: Response("down", status=503))

    result = run_dag(pair.dag_id)

    assert result.state == "failed"
    assert result.note is not None and result.note.startswith("cupid: 5 source rows compared; found 2 missing")
    assert "Callbacks: 0 delivered, 3 not delivered. The run failed" in result.note
    view = next(p for p in load_page_now()["pairs"] if p["dag_id"] == pair.dag_id)
    assert view["callbacks"] == {"delivered": 0, "waiting": 0, "failed": 3}
    assert view["last_run"]["problems"] == [{"task_id": "callback", "map_index": 0}]


def test_a_note_the_user_wrote_is_kept(pair: Pair) -> None:
    divergent(pair)
    result = pair.run()
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.run_id == result.run_id)).one()
        run.note = "checked by hand: the replica was restored"
        session.commit()
        assert write_run_note(run) is None
        session.commit()
        session.refresh(run)
        assert run.note == "checked by hand: the replica was restored"
        run.note = "cupid: an older note of cupid's"
        session.commit()
        assert write_run_note(run) == result.note  # cupid's own note is cupid's to replace
        session.commit()
        session.refresh(run)
        assert run.note == result.note and run.dag_run_note.user_id is None


def test_the_page_shows_each_pair_with_its_chart() -> None:
    html = render_page(_page_object())
    assert 'class="chart"' in html and "<rect" in html


def test_run_note_wording() -> None:
    figures = RunFigures.of(
        [{"task": "reconcile", "rows": 1000, "found": {"3": 2}, "chunks": 10, "checksummed": 9, "read": 1}]
    )
    assert run_note(figures, "success", reconcile=True) == (
        "cupid: 1,000 source rows walked; found 2 gone from the source (type 1/2/3: 0/0/2). "
        "10 chunks: 9 checksummed, 1 read."
    )
    assert run_note(RunFigures.of([{"task": "scan", "rows": 0}]), "success") == (
        "cupid: 0 source rows compared; found nothing."
    )


def load_page_now() -> dict:
    with create_session() as session:
        return json.loads(json.dumps(load_page(session).as_dict()))


def _page_object():  # type: ignore[no-untyped-def]
    with create_session() as session:
        return load_page(session)
