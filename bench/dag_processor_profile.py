"""cProfile of one dag-processor parse of ``dags/cupid_dags.py`` with N configs, in-process: the
child's part (DagBag import of the DAG file, serialization, msgpack frame) and the manager's part
(decoding the frame, ``persist_parsing_result``: DAG rows, serialized DAGs, assets, watcher
triggers), against a throwaway PostgreSQL metadata database, with Airflow's own functions.

    python bench/dag_processor_profile.py [--pairs 200] [--watch | --no-watch] [--parses 3] [--top 30]

The first parses create the rows and are not profiled (a running deployment re-parses unchanged
configs); then ``--parses`` steady-state parses are timed (CPU time of this process) and the last
one is profiled, child and manager apart. The child part runs in a fresh subprocess each time, as
the dag-processor forks one per parse (so cupid's modules are imported every parse). ``--child-only``
and ``--manager-only`` skip the other part.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.dag_processor import write_configs  # noqa: E402
from tests.stack import AirflowStack, pg_admin  # noqa: E402

CHILD = r"""
import cProfile, os, pickle, pstats, sys, time
import airflow.dag_processing.manager  # what the manager has imported before it forks
from airflow.dag_processing.processor import DagFileParseRequest, _parse_file, _pre_import_airflow_modules
from airflow.sdk.execution_time.comms import _RequestFrame
import structlog
log = structlog.get_logger()
dag_file, folder, out, profile = sys.argv[1:5]
_pre_import_airflow_modules(dag_file, log)
prof = cProfile.Profile() if profile == "1" else None
c0 = time.process_time()
if prof: prof.enable()
result = _parse_file(DagFileParseRequest(file=dag_file, bundle_path=folder, bundle_name="dags-folder"), log)
frame = _RequestFrame(id=1, body=result.model_dump()).as_bytes()
if prof: prof.disable()
c1 = time.process_time()
with open(out, "wb") as f:
    f.write(frame)
if prof:
    prof.dump_stats(out + ".prof")
print(c1 - c0)
"""


def report(stats_file: str | cProfile.Profile, top: int, title: str) -> None:
    s = io.StringIO()
    st = pstats.Stats(stats_file, stream=s)
    st.strip_dirs().sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)
    print(f"===== {title}\n{s.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--parses", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--child-only", action="store_true")
    parser.add_argument("--manager-only", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="cupid-dagprof-", dir="/tmp"))
    # a deployment re-parses every 30 s + the parse: past the 30 s min_serialized_dag_update_interval,
    # so every parse compares the serialized DAG's hash; back-to-back parses here must too
    stack = AirflowStack(home, extra_env={"AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0"})
    stack.configs.mkdir(parents=True)
    dag_file = stack.dags_folder / "cupid_dags.py"
    shutil.copy(REPO / "dags" / "cupid_dags.py", dag_file)
    write_configs(stack.configs, args.pairs, args.watch)
    pg_admin(f'CREATE DATABASE "{stack.database}"')
    try:
        stack.cli("db", "migrate", timeout=600)
        env = stack.env
        os.environ.update(env)

        def child(profile: bool) -> tuple[float, bytes]:
            out = home / "frame.bin"
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(dag_file), str(stack.dags_folder), str(out), "1" if profile else "0"],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            return float(proc.stdout.strip().splitlines()[-1]), out.read_bytes()

        import msgspec
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.manager import DagFileProcessorManager
        from airflow.dag_processing.processor import DagFileProcessorProcess
        from airflow.sdk.execution_time.comms import _RequestFrame
        from airflow.utils.session import create_session

        DagBundlesManager().sync_bundles_to_db()
        manager = DagFileProcessorManager(max_runs=1)
        decoder = msgspec.msgpack.Decoder(_RequestFrame)

        def persist(frame: bytes) -> None:
            request = decoder.decode(frame[4:])
            result = DagFileProcessorProcess.decoder.validate_python(request.body)
            with create_session() as session:
                manager.persist_parsing_result(
                    bundle_name="dags-folder",
                    bundle_version=None,
                    version_data=None,
                    parsing_result=result,
                    run_duration=1.0,
                    relative_fileloc="cupid_dags.py",
                    session=session,
                )

        # the first parse creates everything; then unpause (as a deployment's DAGs are) and settle
        _, frame = child(False)
        persist(frame)
        with create_session() as session:
            from sqlalchemy import text

            session.execute(text("UPDATE dag SET is_paused = false"))
        for _ in range(2):
            persist(frame)
        mode = "watch" if args.watch else "timetable"
        child_cpu, manager_cpu = [], []
        for i in range(args.parses):
            last = i == args.parses - 1 and not args.no_profile
            if not args.manager_only:
                seconds, frame = child(last)
                child_cpu.append(seconds)
                if last:
                    shutil.copy(home / "frame.bin.prof", f"/tmp/cupid-dagprof-child-{mode}.prof")
                    report(str(home / "frame.bin.prof"), args.top, f"child, {mode} {args.pairs}")
            if not args.child_only:
                prof = cProfile.Profile() if last else None
                c0 = time.process_time()
                if prof:
                    prof.enable()
                persist(frame)
                if prof:
                    prof.disable()
                manager_cpu.append(time.process_time() - c0)
                if prof:
                    prof.dump_stats(f"/tmp/cupid-dagprof-manager-{mode}.prof")
                    report(prof, args.top, f"manager, {mode} {args.pairs}")
        print(f"{mode} {args.pairs}: frame {len(frame) / 1e6:.1f} MB")
        print(f"  child CPU-s per parse: {' '.join(f'{c:.2f}' for c in child_cpu)} (last one profiled)")
        print(f"  manager CPU-s per parse: {' '.join(f'{c:.2f}' for c in manager_cpu)} (last one profiled)")
        from sqlalchemy import text

        with create_session() as session:
            versions = session.execute(text("SELECT count(*) FROM dag_version")).scalar()
            triggers = session.execute(text("SELECT count(*) FROM trigger")).scalar()
        print(f"  dag_version rows {versions}, trigger rows {triggers}")
    finally:
        from airflow.settings import dispose_orm

        with contextlib.suppress(Exception):
            dispose_orm()
        stack.drop_database()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
