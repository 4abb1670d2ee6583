"""Full reconciliation against reladiff on the scan benchmark's 1,000,000-row pair (issue #6).

    python bench/reconcile.py [--rows 1000000] [--workers 2] [--repeat 3] [--only identical|scattered]

Builds the scan benchmark's source table, an identical copy and a copy with 1% scattered
divergence (0.5% missing rows, 0.5% changed names, spread evenly), installs reladiff 0.6.0 into
its own virtualenv (``.bench/reladiff``; created once), and times, in one run:

  * reladiff: ``reladiff <src> user <des> user -k id -c number -c name -c avatar -c amount -j 2``;
  * cupid's reconcile path: the ``plan`` task, then every segment's ``reconcile`` task, run in
    this process with ``--workers`` segments at a time (two mapped tasks on two workers, as
    reladiff's ``-j 2``), comparing the same columns matched on ``id``. No Airflow scheduling.

Identical tables are timed as the median of 3 alternating runs of each (a few-second job on a
shared 2-core machine is noisy). Both must find the same differences; the script checks the
counts and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scan_compare import build, connect, drop  # noqa: E402

RELADIFF = "reladiff==0.6.0"
VENV = REPO / ".bench" / "reladiff"
COLUMNS = ["number", "name", "avatar", "amount"]


def reladiff() -> Path:
    """reladiff in its own virtualenv: its dependencies must not touch the project's."""
    exe = VENV / "bin" / "reladiff"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"{RELADIFF}", "reladiff[mysql]"], check=True)
    return exe


def run_reladiff(exe: Path, src: str, des: str, workers: int) -> tuple[float, int]:
    uri = "mysql://root@127.0.0.1:3306/{}"
    cmd = [str(exe), uri.format(src), "user", uri.format(des), "user", "-k", "id", "-j", str(workers), "--json"]
    for column in COLUMNS:
        cmd += ["-c", column]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - t0
    keys, decoder, text, at = set(), json.JSONDecoder(strict=False), out.stdout, 0
    while (at := _skip_space(text, at)) < len(text):  # ["-", [key, ...]] ["+", [key, ...]] ...
        (_, row), at = decoder.raw_decode(text, at)
        keys.add(row[0])
    return elapsed, len(keys)


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def write_config(folder: Path, src: str, des: str) -> Path:
    config = {
        "src": {"dsn": f"root:@tcp(127.0.0.1:3306)/{src}?charset=utf8mb4", "table": "user", "byColumn": "id",
                "update": False},
        "des": [
            {
                "dsn": f"root:@tcp(127.0.0.1:3306)/{des}?charset=utf8mb4",
                "table": "user",
                "columns": {c: c for c in COLUMNS},
                "byColumn": "id",
                "callbackNotification": {"url": "127.0.0.1:9/unused"},  # the callback task is not run here
                "reconcile": {},
            }
        ],
    }  # fmt: skip
    path = folder / f"{des}.json"
    path.write_text(json.dumps(config))
    return path


def run_cupid(config_path: Path, workers: int) -> tuple[float, dict[int, int], int]:
    """The plan task, then every segment's reconcile task, ``workers`` at a time; their events."""
    from cupid_airflow.operators.reconcile import ReconcileOperator, ReconcilePlanOperator

    common: dict[str, Any] = {"config_file": str(config_path), "destination": 0}
    t0 = time.perf_counter()
    segments = ReconcilePlanOperator(task_id="plan", **common).execute({})  # type: ignore[arg-type]

    def one(segment: dict[str, Any]) -> list[dict[str, Any]]:
        return list(ReconcileOperator(task_id="reconcile", segment=segment, **common).execute({}))  # type: ignore[arg-type]

    with ThreadPoolExecutor(workers) as pool:
        found = [e for events in pool.map(one, segments) for e in events]
    elapsed = time.perf_counter() - t0
    return elapsed, {t: sum(1 for e in found if e["type"] == t) for t in (1, 2, 3)}, len(segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool on identical tables (median)")
    parser.add_argument("--only", choices=["identical", "scattered"], help="time one case only")
    args = parser.parse_args()

    name = f"cupid_rbench_{uuid.uuid4().hex[:6]}"
    exe = reladiff()
    print(f"building {args.rows:,} rows ({name}) ...", flush=True)
    build(name, args.rows)
    same = f"{name}_same"
    cur = connect().cursor()
    cur.execute(f"CREATE DATABASE `{same}` CHARACTER SET utf8mb4")
    cur.execute(f"CREATE TABLE `{same}`.`user` LIKE `{name}_src`.`user`")
    cur.execute(f"INSERT INTO `{same}`.`user` SELECT * FROM `{name}_src`.`user`")
    cur.execute(f"ANALYZE TABLE `{same}`.`user`")
    cur.fetchall()
    try:
        with tempfile.TemporaryDirectory() as folder:
            results = {}
            cases = [("identical", "identical tables", same, args.repeat),
                     ("scattered", "1% scattered divergence", f"{name}_des", 1)]  # fmt: skip
            for case, label, des, repeat in cases:
                if args.only not in (None, case):
                    continue
                # Medians of `repeat` alternating runs: a few-second job on a shared 2-core machine is noisy.
                config = write_config(Path(folder), f"{name}_src", des)
                theirs_runs, ours_runs = [], []
                for _ in range(repeat):
                    theirs, their_keys = run_reladiff(exe, f"{name}_src", des, args.workers)
                    ours, counts, segments = run_cupid(config, args.workers)
                    theirs_runs.append(theirs)
                    ours_runs.append(ours)
                theirs, ours = statistics.median(theirs_runs), statistics.median(ours_runs)
                results[label] = (theirs, ours)
                print(f"{label}:")
                runs = f" (median of {repeat})" if repeat > 1 else ""
                print(f"  reladiff 0.6.0 (-j {args.workers}): {theirs:6.2f} s{runs}, {their_keys:,} differing keys")
                print(f"  cupid reconcile ({segments} segments, {args.workers} at a time): {ours:6.2f} s, "
                      f"{counts[1]:,} missing + {counts[2]:,} different + {counts[3]:,} gone")  # fmt: skip
                if sum(counts.values()) != their_keys:
                    print(f"  !! the two disagree: {their_keys} keys vs {sum(counts.values())} events")
                print(f"  ratio: {theirs / ours:.1f}x faster than reladiff", flush=True)
    finally:
        drop(name)
        cur.execute(f"DROP DATABASE IF EXISTS `{same}`")
    print()
    for label, (theirs, ours) in results.items():
        print(f"{label}: reconcile {ours:.2f} s vs reladiff {theirs:.2f} s = {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
