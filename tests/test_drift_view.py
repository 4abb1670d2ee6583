"""What a run found, where Airflow users look: the run note the listener writes, and the cupid
view's figures and page, from real runs (real MariaDB, a loopback receiver, ``dag.test()``,
Airflow's metadata database). The view in a real browser on a real api-server, with its auth, is
in tests/test_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from airflow.models.dagrun import DagRun, DagRunNote
from airflow.utils.session import create_session
from sqlalchemy import delete, select
from werkzeug import Response

from cupid_airflow.core.drift import RunFigures, run_note
from cupid_airflow.core.tally import TALLY_KEY
from cupid_airflow.names import insert_cursor_key, update_mark_key
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


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    """Airflow's own api-server app in this process (the REST API and the cupid view, as the
    plugin mounts it), every request an admin: the public interface, without a subprocess. The
    view's auth is tested on a real api-server with real logins in tests/test_e2e.py."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
        patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "cupid-tests-jwt-secret-" + "0123456789abcdef" * 4)
        with TestClient(create_app()) as client:
            yield client


def _pairs(api: Any, dag_id: str) -> dict[str, Any]:
    answer = api.get("/cupid/api/pairs")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    return dict(next(p for p in answer.json()["pairs"] if p["dag_id"] == dag_id))


def _page(api: Any) -> str:
    answer = api.get("/cupid/")
    assert answer.status_code == 200
    return str(answer.text)


def test_a_record_without_the_tally_shape_costs_its_own_figures_only(pair: Pair, api: Any) -> None:
    """Anyone allowed to edit one DAG's XComs can write a ``cupid_tally`` through the REST API:
    the view skips it, says so, and reads it again once changed, however long the run has been
    finished."""
    divergent(pair)
    result = pair.run()
    before = _pairs(api, pair.dag_id)  # its sums are now cached: the run is done
    assert before["window"]["rows"] == 5 and before["window"]["unreadable_records"] == 0

    xcoms = f"/api/v2/dags/{pair.dag_id}/dagRuns/{quote(result.run_id)}/taskInstances"
    compare = {"version": 1, "task": "compare", "rows": "5", "found": {"1": "2", "2": 1}}
    assert api.patch(f"{xcoms}/compare/xcomEntries/{TALLY_KEY}", json={"value": compare, "map_index": 0}).is_success
    scan = {"version": 1, "task": "scan", "max_id": 5, "cursor": True}
    assert api.patch(f"{xcoms}/scan/xcomEntries/{TALLY_KEY}", json={"value": scan, "map_index": -1}).is_success
    view = _pairs(api, pair.dag_id)  # no 500: the sums of the others
    assert view["window"]["unreadable_records"] == 2
    assert view["window"]["rows"] == 0 and view["window"]["found"] == {"1": 0, "2": 0, "3": 0}
    assert view["callbacks"]["delivered"] == 3  # the callback's own record still counts
    assert "2 task record(s) unreadable, not counted" in _page(api)

    compare = {"version": 1, "task": "compare", "rows": 5, "found": {"1": 2, "2": 1}}
    assert api.patch(f"{xcoms}/compare/xcomEntries/{TALLY_KEY}", json={"value": compare, "map_index": 0}).is_success
    view = _pairs(api, pair.dag_id)
    assert view["window"]["unreadable_records"] == 1 and view["window"]["rows"] == 5  # the edit is seen

    # Numbers too large for any database or metrics backend: two such sums would exceed what
    # Python prints (4,300 digits) and fail the JSON answer.
    huge = {"version": 1, "task": "compare", "rows": 10**4299, "found": {"1": 2, "2": 1}}
    assert api.patch(f"{xcoms}/compare/xcomEntries/{TALLY_KEY}", json={"value": huge, "map_index": 0}).is_success
    assert _pairs(api, pair.dag_id)["window"]["unreadable_records"] == 2


def test_an_edit_is_seen_whoever_loaded_a_page_in_between(
    pair: Pair, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view drops a finished run's cached sums when the audit log shows an XCom write to it,
    also when the page that reads the log is one for a user who may not see that DAG."""
    from cupid_airflow.plugins import drift_data

    monkeypatch.setattr(drift_data, "_AUDIT_MARGIN", timedelta(0))  # as if the next page came much later
    divergent(pair)
    result = pair.run()
    assert _pairs(api, pair.dag_id)["window"]["rows"] == 5  # cached
    xcoms = f"/api/v2/dags/{pair.dag_id}/dagRuns/{quote(result.run_id)}/taskInstances"
    edited = {"version": 1, "task": "compare", "rows": "5"}
    assert api.patch(f"{xcoms}/compare/xcomEntries/{TALLY_KEY}", json={"value": edited, "map_index": 0}).is_success
    with create_session() as session:
        assert load_page(session, allowed={"another_dag"}).pairs == []  # someone else's page
    assert _pairs(api, pair.dag_id)["window"]["unreadable_records"] == 1


def test_a_scan_position_that_does_not_parse_shows_as_unknown(pair: Pair, api: Any) -> None:
    divergent(pair)
    pair.run()
    # edited by hand (Admin -> Variables): JSON whose number no integer holds
    key = insert_cursor_key(pair.dag_id)
    value = '{"version": 1, "cursor": 1e999, "claims": {}, "open": {}}'
    assert api.patch(f"/api/v2/variables/{key}", json={"key": key, "value": value}).is_success
    mark = {"key": update_mark_key(pair.dag_id), "value": '{"version": 1, "until": 1e999, "open": {}}'}
    assert api.post("/api/v2/variables", json=mark).is_success
    view = _pairs(api, pair.dag_id)
    assert (view["insert_cursor"], view["backlog"], view["update_mark"]) == (None, None, None)
    assert view["source_max_id"] == 5
    assert 'class="chart"' in _page(api)

    failed = run_dag(pair.dag_id)  # the pair's next scan fails at once and says what to do
    assert failed.state == "failed" and failed.tries[("scan", -1)] == 1


def test_a_note_the_user_edited_is_theirs_though_it_starts_with_cupids_words(pair: Pair, api: Any) -> None:
    divergent(pair)
    result = pair.run()
    edited = f"{result.note}\nchecked by ops: the replica was restored"  # the UI's note editor opens on cupid's note
    run_url = f"/api/v2/dags/{pair.dag_id}/dagRuns/{quote(result.run_id)}"
    assert api.patch(run_url, json={"note": edited}).is_success
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.run_id == result.run_id)).one()
        assert run.dag_run_note.user_id is not None  # Airflow records who wrote it
        assert write_run_note(run) is None  # the run ends again (a cleared task): the note is kept
        session.commit()
    assert api.get(run_url).json()["note"] == edited


def test_a_note_saved_while_cupid_writes_its_own_is_kept(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between cupid reading the note and writing its own, a user saves one: cupid's write,
    conditional on the note it read, changes nothing."""
    from sqlalchemy import update

    from cupid_airflow.core import drift

    divergent(pair)
    result = pair.run()
    note_of = drift.run_note

    def meanwhile(*args: Any, **kwargs: Any) -> str:
        # the user's save, as cupid's statements see it (SQLite serialises two sessions' writes)
        session.execute(
            update(DagRunNote).where(DagRunNote.dag_run_id == run.id).values(content="ops: mine", user_id="ops")
        )
        return note_of(*args, **kwargs)

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.run_id == result.run_id)).one()
        monkeypatch.setattr(drift, "run_note", meanwhile)
        assert write_run_note(run) is None
        session.commit()
        session.refresh(run)
        assert run.note == "ops: mine"


def test_notes_go_on_the_factorys_dags_only(pair: Pair) -> None:
    from airflow.models.dag import DagTag

    divergent(pair)
    result = pair.run()
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.run_id == result.run_id)).one()
        session.delete(run.dag_run_note)  # the run has no note
        session.execute(delete(DagTag).where(DagTag.dag_id == pair.dag_id))  # any DAG whose task pushed a cupid_tally
        session.commit()
        assert write_run_note(run) is None
        session.commit()
        session.refresh(run)
        assert run.note is None


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


def test_the_view_serves_a_runs_fix_sql_and_nothing_a_tally_points_elsewhere(
    pair: Pair, api: Any, tmp_path: Path
) -> None:
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["repair"] = {"dir": str(tmp_path / "repairs")}  # mode sql
    pair.config_path.write_text(json.dumps(config))
    divergent(pair)
    result = pair.run()

    (summary,) = result.output("repair")
    fix_sql = f"/cupid/repairs/{pair.dag_id}/{quote(result.run_id, safe='')}"
    answer = api.get(fix_sql)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert answer.content == Path(summary["script"]).read_bytes() and b"INSERT INTO" in answer.content
    assert _pairs(api, pair.dag_id)["window"]["repairs"]["planned"] == 3
    assert f'href="repairs/{pair.dag_id}/{quote(result.run_id, safe="")}"' in _page(api)

    # anyone allowed to edit the run's XComs can point its tally anywhere: nothing else is served
    secret = tmp_path / "elsewhere" / "repair-0000.sql"
    secret.parent.mkdir()
    secret.write_text("not cupid's")
    xcoms = f"/api/v2/dags/{pair.dag_id}/dagRuns/{quote(result.run_id)}/taskInstances/repair/xcomEntries/{TALLY_KEY}"
    for elsewhere in (str(secret), "/etc/passwd", f"{Path(summary['script']).parent}/../../x/y/repair-0000.sql"):
        forged = {"version": 1, "task": "repair", "planned": 3, "script": elsewhere}
        assert api.patch(xcoms, json={"value": forged, "map_index": 0}).is_success
        assert api.get(fix_sql).status_code == 404
    assert api.get(f"/cupid/repairs/{pair.dag_id}/no_such_run").status_code == 404
