"""A replica that applies each source change some seconds late and loses some, on real MariaDB: the
source gets inserts and updates, a replicator thread writes each to the destination ``lag(commit
time)`` seconds after its commit, in commit order (as canal and Debezium apply a table's changes),
except the changes marked lost. What the receiver got is then held against what was lost.

Used by ``tests/test_e2e_lag.py`` (a real deployment, the issue's cases) and ``bench/lag.py``
(``make bench-lag``, the same cases with figures). The pure model of the same replica, for the
confirmation core in simulated time, is ``tests/lag_model.py``.
"""

from __future__ import annotations

import heapq
import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import MySqlDatabase
from tests.pairs import SRC_TABLE
from tests.stack import Recorder

#: The replica's table: the source's columns the config maps, the update column included (a
#: replica written by canal or Debezium has every column).
DES_TABLE = """CREATE TABLE `user` (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  number VARCHAR(32) NOT NULL UNIQUE,
  name VARCHAR(255) NULL,
  update_time DATETIME NULL
)"""
COLUMNS = {"number": "number", "name": "name", "update_time": "update_time"}


@dataclass
class Change:
    at: float  # commit time (epoch s)
    number: str
    name: str  # unique per change: identifies the version a callback reports
    kind: str  # insert | update
    lost: bool


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    change: Change = field(compare=False)
    stamp: Any = field(compare=False)


class LaggingReplica:
    """The source and destination of one pair, a workload on the source and its replicator."""

    def __init__(self, src: MySqlDatabase, des: MySqlDatabase, lag: Callable[[float], float]) -> None:
        self.src, self.des, self.lag = src, des, lag
        self.changes: list[Change] = []
        self.rows: list[str] = []
        self._queue: list[_Due] = []
        self._last_apply = 0.0
        self._cv = threading.Condition()
        self._stop = False
        self._seq = 0
        self._thread = threading.Thread(target=self._replicate, name="replicator", daemon=True)
        self.errors: list[BaseException] = []
        src.execute(SRC_TABLE)
        des.execute(DES_TABLE)

    def config(self, callback_url: str) -> dict[str, Any]:
        """The pair's config: cupid's defaults except where the tables are and the callback goes."""
        return {
            "src": {"dsn": self.src.dsn, "table": "user", "byColumn": "number", "updateColumn": "update_time"},
            "des": [
                {
                    "dsn": self.des.dsn,
                    "table": "user",
                    "columns": COLUMNS,
                    "byColumn": "number",
                    "callbackNotification": {"url": callback_url},
                }
            ],
        }

    def start(self) -> LaggingReplica:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(10)

    # ------------------------------------------------------------------ the source's changes

    def insert(self, lost: bool = False) -> Change:
        number = f"n{len(self.rows) + 1}"
        self.rows.append(number)
        return self._commit(number, "insert", lost)

    def update(self, number: str, lost: bool = False) -> Change:
        return self._commit(number, "update", lost)

    def _commit(self, number: str, kind: str, lost: bool) -> Change:
        name = f"{number} v{sum(1 for c in self.changes if c.number == number) + 1}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        if kind == "insert":
            self.src.execute(
                "INSERT INTO `user` (number, name, update_time) VALUES (%s, %s, %s)", (number, name, stamp)
            )
        else:
            self.src.execute("UPDATE `user` SET name = %s, update_time = %s WHERE number = %s", (name, stamp, number))
        change = Change(time.time(), number, name, kind, lost)
        self.changes.append(change)
        if not lost:
            with self._cv:
                self._last_apply = max(self._last_apply, change.at + self.lag(change.at))
                self._seq += 1
                heapq.heappush(self._queue, _Due(self._last_apply, self._seq, change, stamp))
                self._cv.notify()
        return change

    def _replicate(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._queue or self._queue[0].at > time.time()):
                    self._cv.wait(None if not self._queue else max(0.0, self._queue[0].at - time.time()))
                if self._stop:
                    return
                due = heapq.heappop(self._queue)
            try:
                self._apply(due.change, due.stamp)
            except BaseException as e:  # seen by the test, which fails
                self.errors.append(e)

    def _apply(self, change: Change, stamp: str) -> None:
        self.des.execute(
            "INSERT INTO `user` (number, name, update_time) VALUES (%s, %s, %s) "
            "ON DUPLICATE KEY UPDATE name = VALUES(name), update_time = VALUES(update_time)",
            (change.number, change.name, stamp),
        )

    # ------------------------------------------------------------------ workloads

    def run(self, changes: int, lost: int, spacing: float, warmup: int = 10, seed: int = 1) -> None:
        """``warmup`` inserts, all replicated, then ``changes`` changes ``spacing`` s apart: inserts,
        and from the 20th on every 4th an update of a row inserted (and replicated) at least 10
        changes before; ``lost`` of them lost, half inserts and half updates."""
        rng = random.Random(seed)
        for _ in range(warmup):
            self.insert()
            time.sleep(spacing)
        kinds = ["update" if i >= 20 and i % 4 == 0 else "insert" for i in range(changes)]
        inserts = [i for i, k in enumerate(kinds) if k == "insert"]
        updates = [i for i, k in enumerate(kinds) if k == "update"]
        lose = set(rng.sample(inserts, lost - lost // 2)) | set(rng.sample(updates, lost // 2))
        for i, kind in enumerate(kinds):
            if kind == "insert":
                self.insert(lost=i in lose)
            else:
                gone = {c.number for c in self.changes if c.lost}
                self.update(rng.choice([r for r in self.rows[:-10] if r not in gone]), lost=i in lose)
            time.sleep(spacing)


@dataclass
class Outcome:
    """What the receiver got, held against the changes."""

    false: dict[int, int]  # callbacks for changes that replicated, by type
    missed: list[Change]  # lost changes never called back
    delays: list[float]  # seconds from each lost change's commit to its callback
    unknown: int  # callbacks for no change of this workload

    @property
    def p50(self) -> float:
        return statistics.median(self.delays) if self.delays else float("nan")

    @property
    def max(self) -> float:
        return max(self.delays) if self.delays else float("nan")


def outcome(replica: LaggingReplica, receiver: Recorder) -> Outcome:
    by_name = {c.name: c for c in replica.changes}
    false: dict[int, int] = {}
    reported: dict[str, float] = {}
    unknown = 0
    with receiver.lock:
        received = [(receiver.arrivals[event_id], body) for event_id, body in receiver.events.items()]
    for at, body in received:
        change = by_name.get((body.get("srcColumn") or {}).get("name"))
        if change is None:
            unknown += 1
        elif not change.lost:
            false[body["type"]] = false.get(body["type"], 0) + 1
        else:
            reported.setdefault(change.name, at)
    lost = [c for c in replica.changes if c.lost]
    return Outcome(
        false=false,
        missed=[c for c in lost if c.name not in reported],
        delays=[reported[c.name] - c.at for c in lost if c.name in reported],
        unknown=unknown,
    )


def spike(start: float, before: float = 10.0, minute: float = 60.0) -> Callable[[float], float]:
    """1 s of lag, then 30 s for a minute, then 1 s again."""
    return lambda at: 30.0 if start + before <= at < start + before + minute else 1.0


@dataclass(frozen=True)
class Case:
    """One pair's scenario: its lag (given the workload's start) and its workload."""

    name: str
    lag: Callable[[float], Callable[[float], float]]
    bound: float | None  # the longest a lost change may wait for its callback (None: no bound)
    workload: dict[str, Any]


#: The issue's cases: 80 changes 0.5 s apart at L = 0, 5 and 30 s (10 lost: 5 inserts, 5 updates),
#: and 100 changes 1 s apart through a spike (10 lost), each after 10 replicated inserts.
CASES = (
    Case("l0", lambda start: lambda at: 0.0, 10.0, {"changes": 80, "lost": 10, "spacing": 0.5}),
    Case("l5", lambda start: lambda at: 5.0, 2 * 5 + 15.0, {"changes": 80, "lost": 10, "spacing": 0.5}),
    Case("l30", lambda start: lambda at: 30.0, 2 * 30 + 15.0, {"changes": 80, "lost": 10, "spacing": 0.5}),
    Case("spike", lambda start: spike(start), None, {"changes": 100, "lost": 10, "spacing": 1.0}),
)


class Scenario:
    """Pairs of :data:`CASES` in one running deployment (``stack``), each with its databases
    (``make_db(name)``), replicator, receiver and config ``<prefix>_<case>.json`` (dag id
    ``cupid_<prefix>_<case>``); ``extra`` is added to every config."""

    def __init__(
        self, stack: Any, make_db: Callable[[str], MySqlDatabase], cases: tuple[Case, ...] = CASES,
        prefix: str = "lag", extra: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.stack, self.cases, self.prefix = stack, {c.name: c for c in cases}, prefix
        self.receivers = {c.name: Recorder().start() for c in cases}
        self.replicas: dict[str, LaggingReplica] = {}
        for case in cases:
            replica = LaggingReplica(make_db(f"{prefix}_{case.name}_src"), make_db(f"{prefix}_{case.name}_des"),
                                     lambda at: 0.0).start()  # fmt: skip
            self.replicas[case.name] = replica
            config = {**replica.config(f"{self.receivers[case.name].url}/cb"), **(extra or {})}
            (stack.configs / f"{prefix}_{case.name}.json").write_text(json.dumps(config))
        self.workloads: dict[str, threading.Thread] = {}
        self.start = 0.0

    def dag(self, case: str) -> str:
        return f"cupid_{self.prefix}_{case}"

    def ready(self) -> bool:
        """Every pair's DAG ran its first pass (the sources are empty: the watchers adopt them)."""
        for case in self.cases:
            if self.stack.dag(self.dag(case)) is None:
                return False
            runs = self.stack.runs(self.dag(case))
            if not runs or runs[0]["state"] not in ("success", "failed"):
                return False
            assert runs[0]["state"] == "success", self.stack.log_tail()
        return True

    def run(self, names: tuple[str, ...] | None = None) -> None:
        """Start the workloads of ``names`` (default: every case) at once."""
        self.start = time.time()
        for name, case in self.cases.items():
            if names is not None and name not in names:
                continue
            self.replicas[name].lag = case.lag(self.start)
            workload = threading.Thread(target=self.replicas[name].run, kwargs=case.workload, daemon=True)
            self.workloads[name] = workload
            workload.start()

    def outcome(self, case: str) -> Outcome:
        return outcome(self.replicas[case], self.receivers[case])

    def reported(self, case: str) -> Outcome | None:
        """The outcome once the workload is over and every lost change was called back."""
        found = self.outcome(case)
        return found if not self.workloads[case].is_alive() and not found.missed else None

    def waiting(self, case: str) -> int:
        state = self.stack.variable(f"cupid.{self.dag(case)}.confirm")
        return len(json.loads(state)["candidates"]) if state else 0

    def explain(self, case: str) -> str:
        found = self.outcome(case)
        missed = [(c.name, c.kind, round(c.at - self.start, 1)) for c in found.missed]
        recent = self.stack.api(f"dags/{self.dag(case)}/dagRuns", limit=8, order_by="-id")["dag_runs"]
        runs = [(r["dag_run_id"], r["state"]) for r in recent]
        state = self.stack.variable(f"cupid.{self.dag(case)}.confirm")
        return f"{case}: missed {missed}, false {found.false}\nruns {runs}\nstate {state}"

    def line(self, case: str) -> str:
        found = self.outcome(case)
        return (
            f"{case:>6}: {len(self.replicas[case].changes):3} changes, {len(found.delays):2} of "
            f"{sum(1 for c in self.replicas[case].changes if c.lost)} lost called back (never: {len(found.missed)}), "
            f"delay p50 {found.p50:5.1f} s max {found.max:5.1f} s; callbacks for changes that arrived: "
            f"type 1: {found.false.get(1, 0)}, type 2: {found.false.get(2, 0)}"
        )

    def close(self) -> None:
        for replica in self.replicas.values():
            replica.stop()
        for receiver in self.receivers.values():
            receiver.stop()
