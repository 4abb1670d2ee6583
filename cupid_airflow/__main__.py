"""``python -m cupid_airflow``: check configs before Airflow sees them, and run the demo.

``validate`` imports no Airflow, so it is quick enough for a pre-commit hook or a CI step;
``validate --connect`` also asks the databases (:mod:`cupid_airflow.checks`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cupid_airflow.catalog import CONFIG_DIR_ENV, ConfigEntry, config_files, default_config_dir, load_catalog


def _validate(paths: Sequence[str], connect: bool = False) -> int:
    targets = [Path(p) for p in paths] or [default_config_dir()]
    missing = [p for p in targets if not p.exists()]
    for p in missing:
        print(f"{p}: no such file or folder", file=sys.stderr)
    files = config_files([p for p in targets if p.exists()])
    if not files and not missing:
        print(f"no *.json config found in {', '.join(map(str, targets))}", file=sys.stderr)
        return 1
    bad = len(missing)
    for entry in load_catalog(files):
        if entry.error is None and connect:
            bad += _connected(entry)
        elif entry.error is None:
            print(f"{entry.path}: OK -> {', '.join(entry.all_dag_ids)}")
        else:
            bad += 1
            for problem in entry.error.problems:
                print(f"{entry.path}: {problem}")
    return 1 if bad else 0


def _connected(entry: ConfigEntry) -> int:
    """Check each pair of a valid config against its databases; 1 when any has an error."""
    from cupid_airflow.checks import check_pair
    from cupid_airflow.pair import SyncPair

    assert entry.config is not None
    findings = [
        finding
        for index, dag_id in enumerate(entry.dag_ids)
        for finding in check_pair(SyncPair(entry.config, index, dag_id))  # each line names the file already
    ]
    errors = [f for f in findings if f.severity == "error"]
    for finding in findings:
        label = "warning: " if finding.severity == "warning" else ""
        print(f"{entry.path}: {label}{finding.path}: {finding.message}")
    if not errors:
        print(f"{entry.path}: OK, databases checked -> {', '.join(entry.all_dag_ids)}")
    return 1 if errors else 0


def _demo(workdir: str) -> int:
    from cupid_airflow.demo import main as demo

    return demo(workdir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cupid_airflow", description="cupid-airflow command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser(
        "validate",
        help="check cupid config files; exit 1 if any is invalid",
        description=(
            "Check cupid configs (files, or folders of *.json) and print one line per config: "
            "OK with its DAG ids, or each problem. Without PATH: $" + CONFIG_DIR_ENV + ", else "
            "./dags/configs, else ./configs, else $AIRFLOW_HOME/dags/configs."
        ),
    )
    validate.add_argument("paths", nargs="*", metavar="PATH")
    validate.add_argument(
        "--connect",
        action="store_true",
        help="also connect to every source and destination and check credentials, tables, mapped "
        "columns, the integer id, indexes, key types and the update column's values (imports Airflow)",
    )
    demo = commands.add_parser(
        "demo",
        help="a real run on generated data: SQLite (or CUPID_DEMO_MYSQL), a local receiver, dag.test()",
        description="Build a throwaway Airflow home and source/replica databases with known divergences, "
        "run the generated DAG for real and print what it found and delivered. Set CUPID_DEMO_MYSQL to a "
        "Go DSN (root:@tcp(127.0.0.1:3306)/) to use MariaDB/MySQL instead of SQLite.",
    )
    demo.add_argument("--workdir", default=".cupid-demo", help="where to build it (rebuilt on every run)")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args.paths, args.connect)
    return _demo(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
