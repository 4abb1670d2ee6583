"""``make bench-lag``: what cupid calls back when the destination lags, on a real deployment.

One deployment (scheduler, dag-processor, triggerer, api-server, LocalExecutor on a throwaway
PostgreSQL metadata database) and, per case, one watched pair with cupid's default config (but the
callback URL) beside a replicator that applies each source change L s after its commit, in commit
order, and loses 10 of them (5 inserts, 5 updates; tests/lag.py): L = 0, 5 and 30 s (80 changes
0.5 s apart after 10 replicated inserts), and a spike (1 s, then 30 s for a minute, then 1 s; 100
changes 1 s apart). It runs the cases twice: with ``confirmSeconds: 0`` (every divergence called
back when found, as cupid-go does: the baseline) and with the default (confirmation). For each it
prints the callbacks for changes that replicated (by type), the lost changes never called back,
and the delay from a lost change's commit to its callback (p50, max). Takes about 8 minutes
for every case; ``make bench-lag`` runs L = 0 on a deployment of its own, then the other three.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import MySqlDatabase
from tests.lag import CASES, Scenario
from tests.stack import deployment, wait_for

#: As tests/test_e2e_lag.py: a lost worker's task is retried within 20 s.
RECOVERY = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
}
PHASES = (
    ("confirmSeconds 0: called back when found, as cupid-go does", {"confirmSeconds": 0}, "atonce"),
    ("default: confirmed before callback (confirmSeconds 60)", {}, "confirmed"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=[c.name for c in CASES], help="which of l0 l5 l30 spike")
    parser.add_argument("--no-baseline", action="store_true", help="skip the confirmSeconds 0 runs")
    args = parser.parse_args()
    cases = tuple(c for c in CASES if c.name in args.cases)
    made: list[MySqlDatabase] = []
    run = uuid.uuid4().hex[:6]

    def make_db(name: str) -> MySqlDatabase:
        made.append(MySqlDatabase(f"cupid_bench_{run}_{name}"))
        return made[-1]

    report: list[str] = []
    try:
        with deployment("cupid-bench-lag-", RECOVERY) as stack:
            stack.start()
            for title, extra, prefix in PHASES[1:] if args.no_baseline else PHASES:
                scenario = Scenario(stack, make_db, cases, prefix=prefix, extra=extra)
                try:
                    wait_for(scenario.ready, 180, "the first pass of every pair", every=1)
                    time.sleep(5)
                    scenario.run()
                    started = time.monotonic()
                    for workload in scenario.workloads.values():
                        workload.join(300)
                    # every lost change called back, or the longest bound (2 x 30 + 15 s) and more passed
                    wait_for(lambda s=scenario: all(s.reported(c) for c in s.cases) or None, 150,
                             "every lost change called back", every=1)  # fmt: skip
                    time.sleep(15)  # in-flight candidates clear; a late false callback would show now
                    lines = [title] + [scenario.line(c) for c in scenario.cases]
                    lines.append(f"        ({time.monotonic() - started:.0f} s)")
                    print("\n".join(lines), flush=True)
                    report += lines
                finally:
                    scenario.close()
    finally:
        for db in made:
            db.drop()
    print("\nsummary\n" + "\n".join(report))


if __name__ == "__main__":
    main()
