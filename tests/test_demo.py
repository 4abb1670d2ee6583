"""``make demo`` as a new user runs it: a real run that finds and delivers every planted divergence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_demo_runs_twice_in_a_row(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CUPID"))}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "cupid_airflow", "demo", "--workdir", str(tmp_path / "demo")],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "DAG cupid_demo: run success" in result.stdout
        assert (
            "divergences found:   51 missing (type 1, planted 51), 56 different (type 2, planted 56)" in result.stdout
        )
        assert "callbacks delivered: 51 type 1, 56 type 2" in result.stdout
