"""The confirmation core in simulated time: a replica that applies each change L s late (in
commit order) and loses some, scanned as the watcher would (tests/lag_model.py). The same
scenarios run on a real deployment in tests/test_e2e_lag.py and ``make bench-lag``."""

from __future__ import annotations

import random

import pytest

from cupid_airflow.core.codec import StateError
from cupid_airflow.core.confirm import (
    HOT_CHANGES,
    REPORTED_MEMORY,
    Confirmer,
    Found,
    Observed,
    Recheck,
    new_state,
    read_confirm_state,
)
from tests.lag_model import Replica, Run

#: 80 changes, 10 of them lost (5 inserts, 5 updates), over 40 seconds.
CHANGES = 80


def _workload(replica: Replica, spacing: float = 0.5, seed: int = 7) -> None:
    """Inserts of new rows and, every 4th change from the 20th on, an update of a row inserted
    (and replicated) earlier; 5 of each lost."""
    rng = random.Random(seed)
    kinds = ["update" if i >= 20 and i % 4 == 0 else "insert" for i in range(CHANGES)]
    inserts = [i for i, k in enumerate(kinds) if k == "insert"]
    updates = [i for i, k in enumerate(kinds) if k == "update"]
    lost = set(rng.sample(inserts, 5)) | set(rng.sample(updates, 5))
    rows: list[str] = []
    for i, kind in enumerate(kinds):
        if kind == "insert":
            rows.append(f"n{len(rows) + 1}")
            replica.commit(i * spacing, rows[-1], lost=i in lost)
        else:
            done = {c.key for c in replica.changes if c.lost}
            key = rng.choice([r for r in rows[: len(rows) - 10] if r not in done])
            replica.commit(i * spacing, key, lost=i in lost)


@pytest.mark.parametrize("lag", [0.0, 5.0, 30.0])
@pytest.mark.parametrize("version_mapped", [True, False], ids=["version-mapped", "no-version-column"])
def test_only_lost_changes_are_called_back_in_time(lag: float, version_mapped: bool) -> None:
    replica = Replica(lambda at: lag)
    _workload(replica)
    run = Run(replica, version_mapped=version_mapped)
    # the pair ran before: the destination showed its lag (the first minutes of a new pair wait up to the bound)
    run.confirmer.observe(Observed(fast=[lag + 2.5]), now=0.0)
    run.play(until=40 + 2 * lag + 30)

    assert run.false_callbacks() == []
    assert run.missed() == []
    bound = 10 if lag == 0 else 2 * lag + 15
    assert max(run.delays()) <= bound, sorted(run.delays())


def test_a_lag_spike_calls_back_nothing_that_arrives() -> None:
    """1 s, then 30 s for a minute, then 1 s: changes throughout."""
    replica = Replica(lambda at: 30.0 if 20 <= at < 80 else 1.0)
    rng = random.Random(3)
    for i in range(200):
        replica.commit(i * 0.5, f"n{i + 1}", lost=rng.random() < 0.05)
    run = Run(replica)
    run.play(until=200)
    assert run.false_callbacks() == []
    assert run.missed() == []


def test_a_new_pair_waits_the_bound_until_the_destination_shows_its_lag() -> None:
    replica = Replica(lambda at: 40.0)
    replica.commit(0.0, "n1", lost=True)  # the only change, lost, before anything arrived
    run = Run(replica, cap=60)
    run.play(until=90)
    assert [round(at) for at, _ in run.called_back] == [60]  # not at the window the cold start cannot know


def test_a_hot_row_is_reported_hot_and_called_back_once_its_replica_stops_following() -> None:
    confirmer = Confirmer(new_state(), cap=30)

    def event(v: int, des: int) -> dict:  # type: ignore[type-arg]
        return {"type": 2, "srcColumn": {"number": "n1", "v": str(v)}, "desColumn": {"number": "n1", "v": str(des)},
                "eventId": f"e{v}", "byValue": "n1"}  # fmt: skip

    confirmer.add([Found(event(1, 0), 0.0, 1)], now=0.5)  # type: ignore[arg-type]
    now = 0.5
    for v in range(2, 12):  # the source changes every 2 s; the replica follows 3 s behind
        now += 2
        verdict = confirmer.recheck([Recheck("n1", event(v, v - 1), now - 0.5, 1)], now)  # type: ignore[arg-type]
        assert verdict.confirmed == []
    assert confirmer.hot == 1 and confirmer.waiting == 1
    assert confirmer.state["candidates"]["n1"]["changes"] >= HOT_CHANGES

    # the source stops at version 11 and the replica stays at 10: lost, confirmed by its age
    stamp = now - 0.5
    verdict = confirmer.recheck([Recheck("n1", event(11, 10), stamp, 1)], stamp + 29)  # type: ignore[arg-type]
    assert verdict.confirmed == []
    verdict = confirmer.recheck([Recheck("n1", event(11, 10), stamp, 1)], stamp + 31)  # type: ignore[arg-type]
    assert [e["eventId"] for e in verdict.confirmed] == ["e11"]
    assert confirmer.waiting == 0


def test_a_hot_row_whose_replica_stopped_following_is_confirmed_though_it_keeps_changing() -> None:
    confirmer = Confirmer(new_state(), cap=30)

    def event(v: int) -> dict:  # type: ignore[type-arg]
        return {"type": 2, "srcColumn": {"number": "n1", "v": str(v)}, "desColumn": {"number": "n1", "v": "0"},
                "eventId": f"e{v}", "byValue": "n1"}  # fmt: skip

    confirmed = []
    for v in range(1, 40):  # the source changes every second; the replica keeps version 0
        now = float(v)
        found = [Found(event(v), now - 0.2, 1)]
        verdict = (
            confirmer.add(found, now) if v == 1 else confirmer.recheck([Recheck("n1", event(v), now - 0.2, 1)], now)
        )  # type: ignore[arg-type]
        confirmed += [(now, e["eventId"]) for e in verdict.confirmed]
        if verdict.confirmed:
            break
    assert confirmed == [(31.0, "e31")]  # 30 s after the replica last changed (never), not a fresh event a second


def test_old_divergences_and_null_keys_are_confirmed_at_once() -> None:
    confirmer = Confirmer(new_state(), cap=60)
    old = {"type": 1, "srcColumn": {"number": "a"}, "eventId": "1", "byValue": "a"}
    null = {"type": 1, "srcColumn": {"number": None}, "eventId": "2", "byValue": None}
    fresh = {"type": 1, "srcColumn": {"number": "b"}, "eventId": "3", "byValue": "b"}
    verdict = confirmer.add(
        [Found(old, 1000.0, 1), Found(null, 4990.0, 2), Found(fresh, 4990.0, 3)],
        now=5000.0,  # type: ignore[arg-type]
    )
    assert sorted(e["eventId"] for e in verdict.confirmed) == ["1", "2"] and verdict.added == 1
    assert confirmer.next_look(5000.0) == 5002.0  # looked at again soon: LOOK_GAP, then after half its age
    still = Recheck("b", fresh, 4990.0, 3)  # type: ignore[arg-type]
    assert confirmer.recheck([still], 5049.0).confirmed == []  # nothing known of the lag: the bound
    assert confirmer.recheck([still], 5050.0).confirmed == [fresh]


def test_the_state_round_trips_and_a_bad_one_says_so() -> None:
    confirmer = Confirmer(new_state(), cap=60)
    confirmer.add([Found({"type": 1, "srcColumn": {}, "eventId": "e", "byValue": "k"}, 10.0, 5)], now=12.0)  # type: ignore[arg-type]
    import json

    state = read_confirm_state(json.loads(json.dumps(confirmer.state)))
    assert state == confirmer.state
    with pytest.raises(StateError, match="delete it"):
        read_confirm_state({"version": 1, "candidates": {"k": {"type": "x"}}})
    with pytest.raises(StateError, match="newer release"):
        read_confirm_state({"version": 2})


def test_the_next_look_is_never_in_the_past() -> None:
    """A key found again by a later run's compare (a new version) counts as looked at then: the
    time stored for the watcher is always ahead of the scan that stores it."""
    confirmer = Confirmer(new_state(), cap=60)

    def event(v: int) -> dict:  # type: ignore[type-arg]
        return {"type": 1, "srcColumn": {"number": "k", "v": str(v)}, "eventId": f"e{v}", "byValue": "k"}

    confirmer.add([Found(event(1), 100.0, 1)], now=101.0)  # type: ignore[arg-type]
    confirmer.add([Found(event(2), 110.0, 1)], now=117.0)  # type: ignore[arg-type]
    next_look = confirmer.next_look(117.0)
    assert next_look is not None and next_look > 117.0


def _row(key: str, v: str, des: str | None, b: str = "b0", des_b: str = "b0") -> dict:  # type: ignore[type-arg]
    """An event for key ``key`` whose source holds ``v`` (and ``b``), the destination ``des``."""
    src = {"number": key, "v": v, "b": b}
    event = {"type": 1 if des is None else 2, "srcColumn": src, "eventId": f"{key}-{v}-{b}", "byValue": key}
    if des is not None:
        desc = {"number": key, "v": des, "b": des_b}
        event["desColumn"] = desc
        event["diffColumns"] = [c for c in ("v", "b") if src[c] != desc[c]]
    return event


def test_a_change_committed_late_is_not_passed_by_what_committed_before_it() -> None:
    """A transaction stamped its row at 100 and committed at 130: a version stamped 120 that
    arrived says nothing of it (it committed before); one stamped after it was seen does."""
    confirmer = Confirmer(new_state(), cap=60)
    confirmer.observe(Observed(fast=[1.0]), 0.0)  # the destination has been 1 s behind
    event = _row("k", "1", "0")
    verdict = confirmer.add([Found(event, 100.0, 1)], now=131.0)  # type: ignore[arg-type]
    assert verdict.confirmed == [] and confirmer.waiting == 1
    assert confirmer.recheck([Recheck("k", event, 100.0, 1)], 132.0).confirmed == []  # type: ignore[arg-type]
    confirmer.observe(Observed(stamp=120.0), 132.5)
    other = _row("j", "1", None)
    confirmer.add([Found(other, 131.5, 2)], now=132.5)  # type: ignore[arg-type]  # a later change, in flight
    assert confirmer.recheck([Recheck("k", event, 100.0, 1)], 133.0).confirmed == []  # type: ignore[arg-type]
    confirmer.observe(Observed(stamp=133.5), 134.0)  # written after k was seen: k should be there
    assert confirmer.recheck([Recheck("k", event, 100.0, 1)], 134.0).confirmed == [event]  # type: ignore[arg-type]


def test_stamps_from_the_future_and_unmapped_versions_prove_nothing() -> None:
    observed = Observed()
    observed.applied(1100.0, None, 1000.0, 60, version=True, present=False, first_sight=True)  # a clock ahead
    assert observed.stamp is None and observed.fast == []
    observed.applied(999.0, 7, 1000.0, 60, version=False, present=True, first_sight=True)  # update column not kept
    assert observed.stamp is None and observed.fast == [] and observed.id == 7
    confirmer = Confirmer(new_state(), cap=60, version=False)
    confirmer.observe(Observed(stamp=2000.0), 1000.0)
    assert confirmer.state["watermark"] is None


def test_a_new_row_stamped_long_ago_waits_like_any_new_row() -> None:
    """A bulk load inserts rows stamped last year: all in flight, none confirmed by its stamp."""
    confirmer = Confirmer(new_state(), cap=60)
    event = _row("k", "1", None)
    assert confirmer.add([Found(event, 10.0, 1, new=True)], now=100_000.0).confirmed == []  # type: ignore[arg-type]
    assert confirmer.recheck([Recheck("k", event, 10.0, 1)], 100_059.0).confirmed == []  # type: ignore[arg-type]
    assert confirmer.recheck([Recheck("k", event, 10.0, 1)], 100_060.0).confirmed == [event]  # type: ignore[arg-type]


def test_a_row_inserted_after_a_candidate_was_seen_passes_it_whatever_its_type() -> None:
    confirmer = Confirmer(new_state(), cap=60)
    update, insert = _row("a", "2", "1"), _row("b", "1", None)
    verdict = confirmer.add([Found(update, 50.0, 3), Found(insert, 50.5, 9, new=True)], 52.0, frontier=10)  # type: ignore[arg-type]
    assert verdict.confirmed == []
    confirmer.observe(Observed(id=10), 54.0)  # present, but not inserted after them
    looks = [Recheck("a", update, 50.0, 3), Recheck("b", insert, 50.5, 9)]  # type: ignore[arg-type]
    assert confirmer.recheck(looks, 54.0).confirmed == []
    confirmer.observe(Observed(id=11), 56.0)
    assert sorted(e["eventId"] for e in confirmer.recheck(looks, 56.0).confirmed) == ["a-2-b0", "b-1-b0"]


def test_a_difference_stuck_while_the_replica_follows_the_rest_is_confirmed() -> None:
    """Column b's change was lost; the replica keeps following v, which changes every 2 s."""
    confirmer = Confirmer(new_state(), cap=30)
    first = _row("k", "1", "1", b="x", des_b="b0")
    confirmer.add([Found(first, 0.0, 1)], 1.0)  # type: ignore[arg-type]
    confirmed = []
    now = 1.0
    for v in range(2, 30):
        now += 2
        event = _row("k", str(v), str(v), b="x", des_b="b0")  # v arrived; b never will
        confirmed = confirmer.recheck([Recheck("k", event, now - 0.5, 1)], now).confirmed  # type: ignore[arg-type]
        if confirmed:
            break
    assert confirmer.state["candidates"] == {} and now == 31.0, now
    assert confirmed[0]["diffColumns"] == ["b"]


def test_candidates_beyond_the_cap_are_spilled_not_confirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    from cupid_airflow.core import confirm

    monkeypatch.setattr(confirm, "MAX_CANDIDATES", 3)
    confirmer = Confirmer(new_state(), cap=60)
    events = [_row(f"k{i}", "1", None) for i in range(5)]
    verdict = confirmer.add([Found(e, 100.0 + i, i, new=True) for i, e in enumerate(events)], 105.0)  # type: ignore[arg-type]
    assert verdict.confirmed == [] and verdict.added == 3 and sorted(verdict.spilled) == ["k3", "k4"]
    assert confirmer.take(verdict.spilled) == verdict.spilled  # no room yet: handed back
    del confirmer.state["candidates"]["k0"]
    left = confirmer.take(verdict.spilled)
    assert len(left) == 1 and confirmer.waiting == 3 and set(left) | set(confirmer.state["candidates"]) >= {"k3", "k4"}


def test_handovers_to_take_in_are_looked_at_soon() -> None:
    confirmer = Confirmer(new_state(), cap=60)
    assert confirmer.next_look(10.0) is None
    confirmer.state["pending"].append(["run", [0, 1], 5.0])
    assert confirmer.next_look(10.0) == 12.0


def test_a_candidate_found_again_is_decided_then_as_at_a_look() -> None:
    """A scan that finds a waiting key again (an overlapping window) decides it there: a first
    version left it to the next run, and every candidate behind it waited a run longer."""
    confirmer = Confirmer(new_state(), cap=60)
    confirmer.observe(Observed(fast=[1.0]), 0.0)  # window 1.25 x 1 + 2 s
    event = _row("k", "1", None)
    assert confirmer.add([Found(event, 100.0, 1)], now=100.5).confirmed == []  # type: ignore[arg-type]
    assert confirmer.add([Found(event, 100.0, 1)], now=102.0).confirmed == []  # type: ignore[arg-type]
    verdict = confirmer.add([Found(event, 100.0, 1)], now=104.0)  # type: ignore[arg-type]
    assert verdict.confirmed == [event] and verdict.added == 0 and confirmer.waiting == 0


def test_later_changes_seen_missing_keep_time_from_confirming() -> None:
    """The window was learnt before the destination fell behind: a look that found later changes
    missing too confirms nothing by time (a change applied after it still would)."""
    confirmer = Confirmer(new_state(), cap=60)
    confirmer.observe(Observed(fast=[1.0]), 0.0)
    event = _row("k", "1", None)
    confirmer.add([Found(event, 100.0, 1)], now=100.5)  # type: ignore[arg-type]
    look = [Recheck("k", event, 100.0, 1)]  # type: ignore[arg-type]
    assert confirmer.recheck(look, 110.0, behind=True).confirmed == []
    confirmer.observe(Observed(stamp=103.0), 110.5)  # a version written after k was seen arrived
    assert confirmer.recheck(look, 111.0, behind=True).confirmed == [event]


def test_without_new_rows_to_time_the_lag_clearing_is_timed_from_the_stamp() -> None:
    """Updates only, the update column not mapped: nothing but cleared candidates shows the lag.
    One seen 25 s after its commit cleared 6 s later: the replica is 31 s behind, not 6."""
    confirmer = Confirmer(new_state(), cap=60, version=False)
    first = _row("a", "2", "1")
    confirmer.add([Found(first, 0.0, 1)], now=25.0)  # type: ignore[arg-type]
    assert confirmer.recheck([Recheck("a", None, 0.0, 1)], 31.0).cleared == 1
    assert confirmer.lag(31.0) == pytest.approx(31.0)
    later = _row("b", "2", "1")
    confirmer.add([Found(later, 100.0, 2)], now=101.0)  # type: ignore[arg-type]
    look = [Recheck("b", later, 100.0, 2)]  # type: ignore[arg-type]
    assert confirmer.recheck(look, 111.0).confirmed == []  # it arrives at 130
    assert confirmer.recheck(look, 101.0 + 1.25 * 31.0 + 2.0).confirmed == [later]


def test_a_divergence_called_back_is_not_called_back_again_while_it_stays_as_it_was() -> None:
    """Found again exactly as called back (overlapping update windows; a quick look, then the run
    that claims the row), it is no candidate again: until its source or destination row changes,
    or the memory of it ends."""
    confirmer = Confirmer(new_state(), cap=60)
    lost = _row("k", "2", "1")
    assert confirmer.add([Found(lost, 0.0, 1)], now=100.0).confirmed == [lost]  # type: ignore[arg-type]
    again = confirmer.add([Found(lost, 0.0, 1)], now=105.0)  # type: ignore[arg-type]
    assert again.confirmed == [] and again.repeated == 1 and confirmer.waiting == 0
    flag = _row("x", "2", "1")
    confirmer.add([Found(flag, 0.0, 3)], now=100.0)  # type: ignore[arg-type]
    later = confirmer.add([Found(flag, 104.0, 3)], now=106.0)  # type: ignore[arg-type]
    assert later.repeated == 0 and later.added == 1  # the same values again, a later version (X, Y, X): it waits
    moved = _row("k", "3", "1")  # a new source version, still not applied: a candidate of its own
    assert confirmer.add([Found(moved, 106.0, 1)], now=107.0).added == 1  # type: ignore[arg-type]
    other = _row("j", "2", "1")
    confirmer.add([Found(other, 0.0, 2)], now=100.0)  # type: ignore[arg-type]
    expired = confirmer.add([Found(other, 0.0, 2)], now=100.0 + REPORTED_MEMORY + 1)  # type: ignore[arg-type]
    assert expired.repeated == 0 and expired.confirmed == [other]  # the memory ended: called back again


def test_what_was_called_back_is_remembered_for_the_newest_keys_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cupid_airflow.core.confirm.REPORTED_KEYS", 3)
    confirmer = Confirmer(new_state(), cap=60)
    for i in range(5):
        confirmer.add([Found(_row(f"k{i}", "2", "1"), 0.0, i)], now=100.0 + i)  # type: ignore[arg-type]
    assert list(confirmer.state["reported"]) == ["k2", "k3", "k4"]
    assert read_confirm_state({**confirmer.state, "reported": None}) == {**confirmer.state, "reported": {}}


def test_the_first_window_still_running_ends_when_its_candidate_was_seen_plus_the_window() -> None:
    confirmer = Confirmer(new_state(), cap=60)
    confirmer.observe(Observed(fast=[1.0]), 0.0)  # window 1.25 x 1 + 2 s
    confirmer.add([Found(_row("a", "2", "1"), 99.0, 1)], now=100.0)  # type: ignore[arg-type]
    confirmer.add([Found(_row("b", "2", "1"), 100.5, 2)], now=101.0)  # type: ignore[arg-type]
    assert confirmer.window_end(102.0, ["a", "b"]) == pytest.approx(103.25)
    assert confirmer.window_end(103.5, ["a", "b"]) == pytest.approx(104.25)  # a's has ended
    assert confirmer.window_end(105.0, ["a", "b"]) is None


def test_a_candidate_a_quick_look_took_in_teaches_no_lag_when_it_clears() -> None:
    """A quick look takes in rows maybe in flight, looks seconds apart: how long they took to
    clear says how far apart the looks were, not how late the destination is."""
    confirmer = Confirmer(new_state(), cap=60)
    confirmer.add([Found(_row("q", "2", None), 99.0, 1)], now=100.0, quick=True)  # type: ignore[arg-type]
    assert confirmer.recheck([Recheck("q", None, 99.0, 1)], 103.0).cleared == 1
    assert confirmer.lag(103.0) is None
