"""``python -m cupid_airflow``: check configs before Airflow sees them, and run the demo.

``validate`` imports no Airflow, so it is quick enough for a pre-commit hook or a CI step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cupid_airflow.catalog import CONFIG_DIR_ENV, config_files, default_config_dir, load_catalog


def _validate(paths: Sequence[str]) -> int:
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
        if entry.error is None:
            print(f"{entry.path}: OK -> {', '.join(entry.dag_ids)}")
        else:
            bad += 1
            for problem in entry.error.problems:
                print(f"{entry.path}: {problem}")
    return 1 if bad else 0


def _demo() -> int:
    from cupid_airflow.dag_factory import build_dags

    repo_dags = Path(__file__).resolve().parent.parent / "dags"
    folder = default_config_dir(repo_dags / "cupid_dags.py")
    print(f"cupid demo (placeholder until the end-to-end demo lands): DAGs built from {folder}")
    dags = build_dags(repo_dags / "cupid_dags.py")
    for dag_id, dag in dags.items():
        tasks = " -> ".join(t.task_id for t in dag.topological_sort())  # type: ignore[no-untyped-call]
        print(f"  {dag_id}: {dag.description}; tasks {tasks}; schedule {dag.timetable!r}")
    return 0 if dags else 1


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
    commands.add_parser("demo", help="build the example DAGs and show them", description="Run the demo.")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args.paths)
    return _demo()


if __name__ == "__main__":
    sys.exit(main())
