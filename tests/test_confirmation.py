"""Divergences are confirmed before they are called back (``confirmSeconds``), on real MariaDB, a
loopback receiver and ``dag.test()`` runs: what the replica still had in flight is cleared, what it
lost is called back, through the inline and the mapped paths, and a scan killed after deciding
sends what it confirmed again. The decisions themselves: tests/test_confirm.py; a real
deployment with a lagging replica: tests/test_e2e_lag.py."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.models.variable import Variable
from airflow.utils.session import create_session

from cupid_airflow.names import confirm_state_key
from cupid_airflow.plugins.drift_data import load_page
from cupid_airflow.plugins.drift_view import render_page
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")

#: confirmSeconds: longer than a dag.test() run takes to reach its compare on a busy machine (15 s
#: was not: rows seen that late were confirmed by their stamps), short enough to wait out.
CAP = 20


@pytest.fixture
def confirming(pair: Pair) -> Pair:
    pair.configure(
        inlineRows=1000,
        confirmSeconds=CAP,
        failureJobRetrySecond=1,
        schedule="@continuous",  # each run's update window ends at its start
        src={"update": True, "updateColumn": "update_time", "updateScanSecond": 0},
    )
    return pair


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _add_source(pair: Pair, number: str, name: str, stamp: datetime | None = None) -> None:
    pair.add_source((number, name, None, None, None, stamp or _now()))


def _state(pair: Pair) -> dict[str, Any]:
    return dict(json.loads(Variable.get(confirm_state_key(pair.dag_id))))


def _tally(result: Any, task: str = "scan", map_index: int = -1) -> dict[str, Any]:
    return dict(result.other_xcoms[(task, map_index, "cupid_tally")])


def test_a_change_in_flight_is_cleared_and_a_lost_one_called_back(confirming: Pair) -> None:
    pair = confirming
    _add_source(pair, "n1", "in flight")
    _add_source(pair, "n2", "lost")

    first = pair.run()
    assert pair.callbacks() == []  # both just committed: candidates, not callbacks
    assert set(_state(pair)["candidates"]) == {"n1", "n2"}
    assert {k: _tally(first)[k] for k in ("candidates", "waiting", "cleared")} == {
        "candidates": 2,
        "waiting": 2,
        "cleared": 0,
    }

    pair.add_destination(("n1", "in flight", None, None, None))  # the replica catches up on n1
    time.sleep(1.2)
    second = pair.run()
    assert pair.callbacks() == []
    assert set(_state(pair)["candidates"]) == {"n2"}
    assert _tally(second)["cleared"] == 1 and _tally(second)["waiting"] == 1
    assert second.note is not None and "0 held to confirm, 1 cleared in flight, 1 waiting" in second.note

    time.sleep(CAP)  # n2's wait is over: the replica showed no sign of it
    third = pair.run()
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"n2": 1}
    assert _state(pair)["candidates"] == {} and _state(pair)["outbox"] == {}
    assert _tally(third)["found"] == {"1": 1} and _tally(third)["delivered"] == 1
    assert third.note is not None and "1 missing" in third.note and "waiting" not in third.note

    # the cupid view, from the runs' records: held, cleared in flight, confirmed, waiting now
    with create_session() as session:
        view = next(p for p in load_page(session).as_dict()["pairs"] if p["dag_id"] == pair.dag_id)
    assert view["confirmation"] == {
        "waiting": 0, "hot": 0, "lag_seconds": view["confirmation"]["lag_seconds"], "confirmed": 1, "held": 2,
        "cleared_in_flight": 1,
    }  # fmt: skip
    assert view["confirmation"]["lag_seconds"] is not None  # n1 cleared: the replica's lag, learnt
    with create_session() as session:
        html = render_page(load_page(session))
    assert "cleared in flight" in html and "replica lag" in html


def test_a_change_found_in_a_past_window_is_called_back_at_once_a_new_row_stamped_long_ago_is_not(
    confirming: Pair,
) -> None:
    """A backfill over a past window finds a change written long ago: lost, no wait. A new row
    stamped long ago (a bulk load of history) may be in flight all the same: it waits."""
    pair = confirming
    pair.add_source(("old", "changed", None, None, None, datetime(2020, 1, 1, 12)))
    pair.des.execute("INSERT INTO `user` (number, name) VALUES ('old', 'changed')")
    pair.run()  # its id claimed, equal
    pair.src.execute("UPDATE `user` SET name = 'lost change' WHERE number = 'old'")  # keeps its 2020 stamp
    _add_source(pair, "loaded", "history", datetime(2020, 1, 1, 12))  # a new row, stamped in 2020
    first = pair.run(conf={"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"})
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"old": 2}
    assert _tally(first)["waiting"] == 1 and list(_state(pair)["candidates"]) == ["loaded"]


def _map_update_column(pair: Pair, confirm_seconds: int) -> None:
    """The replica keeps the source's update column (as canal's and Debezium's do)."""
    pair.des.execute("ALTER TABLE `user` ADD COLUMN update_time DATETIME NULL")
    config = json.loads(pair.config_path.read_text())
    config["des"][0]["columns"]["update_time"] = "update_time"
    config["confirmSeconds"] = confirm_seconds
    pair.config_path.write_text(json.dumps(config))


def test_a_later_change_applied_confirms_an_earlier_one_at_once(confirming: Pair) -> None:
    """With the update column mapped, a row seen equal proves its version arrived: the replica
    applied a change written after the missing one was seen (so committed after it), which it
    would have applied first."""
    pair = confirming
    _map_update_column(pair, 600)  # nothing here waits that long: only evidence confirms
    _add_source(pair, "lost", "lost")
    pair.run()
    assert pair.callbacks() == [] and list(_state(pair)["candidates"]) == ["lost"]
    time.sleep(3)  # stamped at least ORDER_MARGIN after "lost" was seen: certainly committed after it
    later = _now().replace(microsecond=0)
    _add_source(pair, "later", "arrived", later)
    pair.des.execute("INSERT INTO `user` (number, name, update_time) VALUES ('later', 'arrived', %s)", (later,))
    pair.run()
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"lost": 1}
    assert _state(pair)["watermark"] == later.replace(tzinfo=UTC).timestamp()  # what the replica showed


class _InSyncWriter:
    """An in-sync replica's writes: a row every 0.4 s, in the destination as it commits (the only
    user of ``pair.src`` and ``pair.des`` while it runs); ``lose(number, when)`` commits one row
    to the source alone (lost) as soon as ``when()`` holds."""

    def __init__(self, pair: Pair) -> None:
        self.pair, self.stop = pair, threading.Event()
        self.lost: list[tuple[str, Any]] = []
        self.thread = threading.Thread(target=self._write, daemon=True)

    def __enter__(self) -> _InSyncWriter:
        self.thread.start()
        time.sleep(1)  # rows replicated within the second: a scan sees a fresh version applied
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def lose(self, number: str, when: Any) -> None:
        self.lost.append((number, when))

    def _write(self) -> None:
        i = 0
        while not self.stop.wait(0.1):
            for number, when in list(self.lost):
                if when():
                    _add_source(self.pair, number, "lost")
                    self.lost.remove((number, when))
            i += 1
            if i % 4:
                continue
            stamp = _now().replace(microsecond=0)
            self.pair.des.execute(
                "INSERT INTO `user` (number, name, update_time) VALUES (%s, 'replicated', %s)", (f"w{i}", stamp)
            )
            _add_source(self.pair, f"w{i}", "replicated", stamp)


def test_an_in_sync_replica_lost_change_is_called_back_by_the_run_that_found_it(confirming: Pair) -> None:
    """A scan that finds a candidate while the replica shows a version seconds old looks once
    more before it ends: the rows written meanwhile, applied, confirm it in the same run."""
    pair = confirming
    _map_update_column(pair, 600)  # nothing waits that long here: only the quick look confirms
    _add_source(pair, "lost", "lost")
    with _InSyncWriter(pair):
        run = pair.run()
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"lost": 1}
    assert _state(pair)["candidates"] == {}
    assert _tally(run)["candidates"] == 1 and _tally(run)["delivered"] == 1


def _waiting(pair: Pair) -> set[str]:
    state = Variable.get(confirm_state_key(pair.dag_id), default_var=None)
    return set(json.loads(state)["candidates"]) if state else set()


def test_a_change_lost_while_the_scan_looks_again_is_called_back_by_that_scan_and_once(confirming: Pair) -> None:
    """A change committed while a scan looks again at its candidates is compared by that look:
    lost, it is called back by that run; the next run, which claims its row, does not call it
    back again; a re-check a person asks for does."""
    pair = confirming
    _map_update_column(pair, 600)  # nothing waits that long here: only the quick looks confirm
    _add_source(pair, "early", "lost")
    with _InSyncWriter(pair) as writer:
        writer.lose("late", lambda: "early" in _waiting(pair))  # once the scan holds "early"
        first = pair.run()
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"early": 1, "late": 1}
    assert _state(pair)["candidates"] == {} and set(_state(pair)["reported"]) == {"early", "late"}
    assert _tally(first)["candidates"] == 2 and _tally(first)["delivered"] == 2
    second = pair.run()  # claims "late", still missing: called back already, not again
    assert pair.callbacks() == [] and _tally(second)["candidates"] == 0
    assert _state(pair)["candidates"] == {}
    pair.run(conf={"start_id": 1})  # a person asks for a re-check: everything found is called back
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"early": 1, "late": 1}


def test_the_last_change_an_in_sync_copy_lost_is_called_back_by_the_run_that_found_it(confirming: Pair) -> None:
    """Nothing later shows whether the last change of a burst arrived: it waits the window the
    copy has shown (seconds), and the scan that found it looks once more when it ends."""
    pair = confirming
    _map_update_column(pair, 600)
    with _InSyncWriter(pair):
        pair.run()  # the copy's lag learnt: about a second
        pair.run()
    _add_source(pair, "last", "lost")
    run = pair.run()
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"last": 1}
    assert _state(pair)["candidates"] == {} and _tally(run)["candidates"] == 1


def test_an_unwatched_pair_waits_in_the_triggerer_and_its_run_calls_back_what_was_lost(confirming: Pair) -> None:
    """Nothing wakes a pair that is not watched: its scan waits for the candidates' next looks
    in the triggerer (``dag.test()`` runs the trigger in line), and the run that found them calls
    back what was lost."""
    pair = confirming
    pair.configure(watch=False)  # confirmSeconds CAP
    _add_source(pair, "n1", "in flight")
    _add_source(pair, "n2", "lost")

    def replica() -> None:  # applies n1 once the scan holds both as candidates
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = Variable.get(confirm_state_key(pair.dag_id), default_var=None)
            if state and set(json.loads(state)["candidates"]) == {"n1", "n2"}:
                pair.add_destination(("n1", "in flight", None, None, None))
                return
            time.sleep(0.2)

    applier = threading.Thread(target=replica, daemon=True)  # the only user of pair.des meanwhile
    applier.start()
    run = pair.run()
    applier.join(5)
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"n2": 1}
    assert _state(pair)["candidates"] == {}
    tally = _tally(run)  # both parts of the scan, before and after it waited
    assert {k: tally[k] for k in ("candidates", "cleared", "waiting", "delivered", "found")} == {
        "candidates": 2, "cleared": 1, "waiting": 0, "delivered": 1, "found": {"1": 1},
    }  # fmt: skip
    assert run.task_states[("scan", -1)] == "success"


def test_candidates_of_mapped_compares_wait_in_the_next_scan(confirming: Pair) -> None:
    pair = confirming
    pair.configure(inlineRows=0)
    _add_source(pair, "m1", "in flight")
    _add_source(pair, "m2", "lost")

    first = pair.run()
    assert pair.callbacks() == []
    assert _tally(first, "compare", 0)["candidates"] == 2
    assert [(run, indexes) for run, indexes, _ in _state(pair)["pending"]] == [(first.run_id, [0, 1])]  # ids, window

    pair.add_destination(("m1", "in flight", None, None, None))
    time.sleep(CAP + 0.5)
    second = pair.run()  # takes the candidates in, looks again: m1 arrived, m2 did not
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"m2": 1}
    assert _state(pair)["pending"] == [] and _state(pair)["candidates"] == {}
    assert _tally(second)["delivered"] == 1  # nothing new to compare: the scan sent it


def test_a_scan_killed_after_confirming_sends_again(confirming: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    from cupid_airflow.operators.scan import ScanOperator

    pair = confirming
    _add_source(pair, "k1", "lost")
    pair.run()
    time.sleep(CAP + 0.5)

    deliver = ScanOperator._deliver_inline
    tries: list[int] = []

    def dies_once(self: ScanOperator, events: list[Any]) -> list[Any]:
        tries.append(len(events))
        if len(tries) == 1:
            raise SystemExit("killed")  # after the decision was kept, before anything was sent
        return deliver(self, events)

    monkeypatch.setattr(ScanOperator, "_deliver_inline", dies_once)
    pair.receiver.clear_log()
    from tests.airflow_run import run_dag

    result = run_dag(pair.dag_id)
    assert result.state == "success" and result.tries[("scan", -1)] == 2
    assert tries == [1, 1]  # the retry found the confirmed event kept, and sent it
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"k1": 1}
    assert _state(pair)["outbox"] == {}


def test_candidates_beyond_what_a_pair_keeps_wait_aside_and_are_looked_at(
    confirming: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cupid_airflow import confirming as module
    from cupid_airflow.core import confirm
    from cupid_airflow.names import confirm_spill_key

    monkeypatch.setattr(confirm, "MAX_CANDIDATES", 2)
    monkeypatch.setattr(module, "MAX_CANDIDATES", 2)
    pair = confirming
    for n in ("s1", "s2", "s3", "s4"):
        _add_source(pair, n, "new")
    first = pair.run()
    assert _tally(first)["waiting"] == 4 and len(_state(pair)["candidates"]) == 2 and _state(pair)["spilled"] == 2
    aside = json.loads(Variable.get(confirm_spill_key(pair.dag_id)))
    pair.add_destination(*[(n, "new", None, None, None) for n in ("s1", "s2", "s3")])  # s4 was lost
    pair.run()  # s1, s2 cleared: room for the two kept aside
    time.sleep(CAP + 0.5)
    for n in ("s5", "s6"):  # found by the run that takes s3, s4 back: no room, kept aside in turn
        _add_source(pair, n, "new")
    pair.run()  # s3 cleared, s4 confirmed (never called back unlooked at)
    assert set(aside) == {"s3", "s4"} and {n: b["type"] for n, b in pair.by_number().items()} == {"s4": 1}
    assert _state(pair)["candidates"] == {} and _state(pair)["spilled"] == 2
    assert set(json.loads(Variable.get(confirm_spill_key(pair.dag_id)))) == {"s5", "s6"}


def test_a_candidate_follows_its_row_and_a_pair_that_stops_confirming_flushes(confirming: Pair) -> None:
    pair = confirming
    _add_source(pair, "r1", "re-keyed")
    _add_source(pair, "r2", "lost")
    pair.run()
    assert set(_state(pair)["candidates"]) == {"r1", "r2"}
    # r1's row now has another key: r1 itself is no longer the source's (a reconcile reports it)
    pair.src.execute("UPDATE `user` SET number = 'r1b' WHERE number = 'r1'")
    pair.configure(confirmSeconds=0)  # the pair stops confirming: what waits is decided now
    pair.run()
    assert {n: b["type"] for n, b in pair.by_number().items()} == {"r2": 1}
    assert Variable.get(confirm_state_key(pair.dag_id), default_var=None) is None
