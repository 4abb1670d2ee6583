"""Metrics through Airflow's Stats, received by a real StatsD listener: a UDP socket on loopback.

Stats is set up the way Airflow's task runner does it (``task_runner.main()``), from
``[metrics] statsd_on`` / ``statsd_host`` / ``statsd_port`` in the environment.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from airflow.sdk.configuration import conf
from airflow.sdk.observability import stats
from airflow.sdk.observability.metrics import stats_utils
from werkzeug import Request, Response

from cupid_airflow import metrics
from cupid_airflow.core.delivery import LATENCY_SAMPLES, DeliveryReport, LatencySample
from tests.conftest import REPO
from tests.pairs import Pair, pair

__all__ = ["pair"]  # the fixture

#: Every name cupid sends (README "Metrics"), before Airflow's ``statsd_prefix``.
NAMES = {
    "cupid.rows", "cupid.divergences", "cupid.callbacks.delivered", "cupid.callbacks.failed",
    "cupid.callbacks.retried", "cupid.callbacks.latency", "cupid.backlog", "cupid.update_lag",
    "cupid.reconcile.checksummed", "cupid.reconcile.read", "cupid.candidates", "cupid.candidates.cleared",
    "cupid.candidates.waiting", "cupid.candidates.hot", "cupid.lag",
}  # fmt: skip


class StatsdListener:
    """Every StatsD line sent to its port, collected by a thread so the socket's buffer never fills."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines += data.decode().splitlines()
            self.last = time.monotonic()

    def settle(self, quiet: float = 0.3) -> None:
        """Wait until nothing arrived for ``quiet`` seconds (UDP has no end of stream)."""
        while time.monotonic() - self.last < quiet:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def of(self, kind: str) -> dict[str, list[float]]:
        """Values by name of one kind: ``c`` counters, ``g`` gauges, ``ms`` timers."""
        found: dict[str, list[float]] = defaultdict(list)
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, what = rest.partition("|")
            if what.split("|")[0] == kind:
                found[name].append(float(value))
        return found

    def counters(self) -> dict[str, float]:
        return {name: sum(values) for name, values in self.of("c").items()}


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
        env.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
        env.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
        _initialize_like_the_task_runner()
        yield listener
    _initialize_like_the_task_runner()  # back to what the configuration says (no metrics)
    listener.close()


def _initialize_like_the_task_runner() -> None:
    stats.initialize(
        factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on")
    )


@pytest.mark.usefixtures("airflow_db")
def test_a_run_sends_the_documented_metrics(pair: Pair, statsd: StatsdListener) -> None:
    pair.configure(maxRowsPerRun=4, src={"update": True, "updateColumn": "update_time"})
    pair.add_source(*[(f"n{i}", "x", Decimal("1.00"), None, None) for i in range(1, 7)])  # ids 1..6
    pair.add_destination(("n1", "x", "1.00", None, None), ("n2", "changed", "1.00", None, None))
    attempts: list[str] = []

    def first_is_throttled(request: Request) -> Response:
        attempts.append(request.get_json()["eventId"])
        return Response("busy", 503, headers={"Retry-After": "0"}) if len(attempts) == 1 else Response("ok")

    pair.answer_with(first_is_throttled)
    pair.run()  # claims ids 1..4 (maxRowsPerRun): n1 equal, n2 different, n3 and n4 missing
    statsd.settle()

    dag = f"airflow.cupid.dag.{pair.dag_id}"
    counters, gauges, timers = statsd.counters(), statsd.of("g"), statsd.of("ms")
    assert {name: n for name, n in counters.items() if name.startswith(dag)} == {
        f"{dag}.rows": 4,
        f"{dag}.divergences.1": 2,
        f"{dag}.divergences.2": 1,
        f"{dag}.callbacks.delivered": 3,
        f"{dag}.callbacks.failed": 0,
        f"{dag}.callbacks.retried": 1,  # the 503, waited out and sent again
    }
    # the tagged names: plain StatsD drops the tags, so these add up every DAG's
    assert counters["airflow.cupid.rows"] == 4 and counters["airflow.cupid.divergences"] == 3
    assert counters["airflow.cupid.callbacks.delivered"] == 3 and counters["airflow.cupid.callbacks.retried"] == 1
    assert gauges[f"{dag}.backlog"] == [2] and gauges["airflow.cupid.backlog"] == [2]  # ids 5 and 6 wait
    [lag] = gauges[f"{dag}.update_lag"]
    assert 0 <= lag < 120
    assert len(timers[f"{dag}.callbacks.latency"]) == len(attempts) == 4  # every POST, 4 < LATENCY_SAMPLES
    assert all(0 < ms < 10_000 for ms in timers[f"{dag}.callbacks.latency"])
    assert counters[f"airflow.ti.finish.{pair.dag_id}.callback.success"] == 1  # Airflow's own, by the same path
    # names hold DAG ids, task kinds and types only: no database, table, host or URL
    ours = {line.partition(":")[0] for line in statsd.lines if line.startswith("airflow.cupid.")}
    dag_names = {f"airflow.cupid.dag.{pair.dag_id}.{n.removeprefix('cupid.')}" for n in NAMES}
    divergences = {f"{dag}.divergences.{kind}" for kind in "12"}
    assert ours <= {f"airflow.{n}" for n in NAMES} | dag_names | divergences, ours

    # the next run claims ids 5 and 6 and, being small, compares and delivers them in its scan
    pair.configure(inlineRows=100)
    statsd.lines.clear()
    pair.run()
    statsd.settle()
    counters = statsd.counters()
    assert {name: n for name, n in counters.items() if name.startswith(dag)} == {
        f"{dag}.rows": 2,
        f"{dag}.divergences.1": 2,
        f"{dag}.callbacks.delivered": 2,
        # no callbacks.failed: what the scan does not deliver, its callback task sends and counts
        f"{dag}.callbacks.retried": 0,
    }
    assert counters["airflow.cupid.callbacks.delivered"] == 2 and statsd.of("g")[f"{dag}.backlog"] == [0]


def test_tags_reach_a_backend_that_keeps_them(statsd: StatsdListener, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``statsd_influxdb_enabled`` Airflow appends the tags to the name; with legacy names off
    only the tagged names go out. A reconcile's chunks and divergences of type 3 too."""
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__LEGACY_NAMES_ON", "False")
    _initialize_like_the_task_runner()
    metrics.emit("cupid_user_reconcile", {"task": "reconcile", "rows": 9, "found": {"3": 2}, "chunks": 5,
                                          "checksummed": 4, "read": 1})  # fmt: skip
    statsd.settle(0.2)
    assert statsd.counters() == {
        "airflow.cupid.rows,dag_id=cupid_user_reconcile,task=reconcile": 9,
        "airflow.cupid.divergences,dag_id=cupid_user_reconcile,task=reconcile,type=3": 2,
        "airflow.cupid.reconcile.checksummed,dag_id=cupid_user_reconcile": 4,
        "airflow.cupid.reconcile.read,dag_id=cupid_user_reconcile": 1,
    }


def test_a_dag_id_with_dots_keeps_the_name_hierarchy(statsd: StatsdListener) -> None:
    metrics.emit("team.cupid_user", {"task": "compare", "rows": 3, "found": {"1": 1}})
    statsd.settle(0.2)
    assert statsd.counters() == {
        "airflow.cupid.rows": 3,
        "airflow.cupid.dag.team__cupid_user.rows": 3,
        "airflow.cupid.divergences": 1,
        "airflow.cupid.dag.team__cupid_user.divergences.1": 1,
    }


def test_metrics_never_fail_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("the metrics backend is gone")

    monkeypatch.setattr(stats, "incr", broken)
    metrics.emit("cupid_user", {"task": "compare", "rows": 3})
    metrics.delivery("cupid_user", "callback", DeliveryReport(delivered=1))
    metrics.emit("cupid_user", {"task": "scan", "until": "not a time"})  # a bad figure: dropped too


def test_the_latency_sample_stays_small_and_covers_every_post() -> None:
    sample = LatencySample()
    for ms in range(10_000):
        sample.add(ms / 1000)
    assert sample.count == 10_000 and sample.longest == 9.999
    assert len(sample.seconds) == LATENCY_SAMPLES
    assert 2 < sum(sample.seconds) / LATENCY_SAMPLES < 8  # uniform over all of them, not the first 100


def test_the_readme_and_the_dashboard_name_what_is_sent() -> None:
    readme = (REPO / "README.md").read_text()
    assert set(re.findall(r"^\| `(cupid\.[a-z_.]+)` \|", readme, re.M)) == NAMES
    dashboard = json.loads((REPO / "docs" / "grafana-cupid.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"airflow_(cupid_[a-z_]+)", target["expr"])
    }
    assert queried == {n.replace(".", "_") for n in NAMES}


@pytest.mark.usefixtures("airflow_db")
def test_confirmation_sends_its_candidates(pair: Pair, statsd: StatsdListener) -> None:
    from datetime import UTC, datetime

    pair.configure(inlineRows=100, confirmSeconds=60, src={"update": True, "updateColumn": "update_time"})
    now = datetime.now(UTC).replace(tzinfo=None)
    pair.add_source(("old", "y", None, None, None, "2020-01-01 00:00:00"))
    pair.des.execute("INSERT INTO `user` (number, name) VALUES ('old', 'y')")
    pair.run()
    pair.src.execute("UPDATE `user` SET name = 'lost' WHERE number = 'old'")  # keeps its 2020 stamp
    pair.add_source(("fresh", "x", None, None, None, now))
    pair.run(conf={"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"})
    statsd.settle()
    dag = f"airflow.cupid.dag.{pair.dag_id}"
    counters, gauges = statsd.counters(), statsd.of("g")
    assert counters[f"{dag}.candidates"] == 1  # the fresh row waits; the old change is called back
    assert counters[f"{dag}.divergences.2"] == 1 and counters[f"{dag}.callbacks.delivered"] == 1
    assert gauges[f"{dag}.candidates.waiting"] == [0, 1] and gauges[f"{dag}.candidates.hot"] == [0, 0]
    assert f"{dag}.lag" not in gauges  # nothing learnt yet
