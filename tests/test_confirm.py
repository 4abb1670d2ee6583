"""The confirmation core in simulated time: a replica that applies each change L s late (in
commit order) and loses some, scanned as the watcher would (tests/lag_model.py). The same
scenarios run on a real deployment in tests/test_e2e_lag.py and ``make bench-lag``."""

from __future__ import annotations

import random

import pytest

from cupid_airflow.core.codec import StateError
from cupid_airflow.core.confirm import (
    HOT_CHANGES,
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
    assert confirmer.next_look(5000.0) == 5005.0  # looked at again after half its age
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
