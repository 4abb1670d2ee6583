"""Call back what replication lost, never what it still has in flight: a real deployment (scheduler,
dag-processor, triggerer, api-server, LocalExecutor) and four watched pairs with cupid's default
config (but the callback URL), each beside a replicator that applies every source change L s after
its commit and loses some (tests/lag.py):

* L = 0 (an in-sync copy): every lost change called back within 10 s of its commit;
* L = 5 s and L = 30 s: no callback for a change that replicated; every lost one within 2 L + 15 s;
* a spike (1 s, then 30 s for a minute, then 1 s): no callback for a change that arrived; and,
  while that pair's candidates wait, the scheduler (with the LocalExecutor's workers, its
  children) and the triggerer are SIGKILLed and started again: every lost change is still called
  back, no replicated one.

All four share one deployment; L = 0 runs first, alone, then the other three at once (about five
minutes). ``make bench-lag`` runs the
same cases, with confirmation off too for comparison, and prints the figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import MySqlDatabase
from tests.lag import Scenario
from tests.stack import AirflowStack, deployment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(720)]

#: A task whose supervisor died with its worker is failed into its retry within 20 s (default
#: 300 s), and one the killed scheduler's LocalExecutor was running is reset for the new
#: scheduler within 30 s (default 330 s): the README's "Scaling out" has these settings.
RECOVERY = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
}


@pytest.fixture
def stack() -> Iterator[AirflowStack]:
    with deployment("cupid-e2e-lag-", RECOVERY) as stack:
        yield stack


def test_only_what_replication_lost_is_called_back(
    stack: AirflowStack, mysql_db: Callable[[str], MySqlDatabase]
) -> None:
    stack.start()
    scenario = Scenario(stack, mysql_db)
    try:
        wait_for(scenario.ready, 150, "the first pass of every pair", every=1)
        time.sleep(5)  # the watchers adopted the (empty) sources

        def wait_reported(case: str, timeout: float) -> None:
            try:
                wait_for(lambda: scenario.reported(case), timeout, f"every lost change of {case} called back", every=1)
            except TimeoutError as e:
                raise AssertionError(f"{scenario.explain(case)}\n{stack.log_tail(120)}") from e

        # L = 0 first, alone: its 10 s bound is cupid's latency, not the wait for a CPU on a
        # 2-CPU machine whose three other pairs run a task every few seconds (up to 15 s then)
        scenario.run(("l0",))
        wait_reported("l0", 240)
        # L = 5, 30 s and the spike at once: every lost change called back, in time
        scenario.run(("l5", "l30", "spike"))
        for case in ("l5", "l30"):
            wait_reported(case, 240)
        # the spike: its workload over, its candidates waiting, the scheduler and triggerer die
        scenario.workloads["spike"].join(150)
        wait_for(lambda: scenario.waiting("spike"), 60, "candidates of the spike pair to wait", every=0.5)
        killed = {component: stack.kill_component(component) for component in ("scheduler", "triggerer")}
        assert all(killed.values())
        time.sleep(2)
        for component in killed:
            stack.start_component(component)
        wait_reported("spike", 240)
        time.sleep(10)  # the candidates of in-flight changes clear; nothing more is called back

        for case in scenario.cases:
            print(scenario.line(case))
        for name, case in scenario.cases.items():
            found = scenario.outcome(name)
            assert found.false == {}, scenario.explain(name)
            assert found.missed == [] and found.unknown == 0, scenario.explain(name)
            assert len(found.delays) == 10
            if case.bound is not None:
                assert found.max <= case.bound, (name, sorted(found.delays))
        assert all(not replica.errors for replica in scenario.replicas.values())
        assert stack.dead_components() == []
    finally:
        scenario.close()
