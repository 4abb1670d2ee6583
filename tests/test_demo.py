"""``make demo`` as a new user runs it: a real run that finds and delivers every planted divergence,
then the UI command it prints, which must really show that run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.stack import free_port, wait_for


def _api(url: str, token: str | None = None) -> object:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_demo_runs_twice_in_a_row_and_its_ui_command_shows_the_run(tmp_path: Path) -> None:
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

    command = next(line for line in result.stdout.splitlines() if "see it in the UI:" in line).split(":", 1)[1]
    port = free_port()
    assert "--host 127.0.0.1 --port 8080" in command  # every user is an admin: loopback only
    command = command.strip().replace("--port 8080", f"--port {port}")
    server = subprocess.Popen(
        ["bash", "-c", command], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def token() -> str | None:
            try:
                return str(_api(f"{base}/auth/token")["access_token"])  # type: ignore[index]
            except OSError:
                return None

        bearer = wait_for(token, 90, "the demo's api-server")
        runs = _api(f"{base}/api/v2/dags/cupid_demo/dagRuns", bearer)["dag_runs"]  # type: ignore[index]
        assert [r["state"] for r in runs] == ["success"]
        tis = _api(f"{base}/api/v2/dags/cupid_demo/dagRuns/{runs[0]['dag_run_id']}/taskInstances", bearer)
        assert {t["task_id"] for t in tis["task_instances"]} >= {"scan", "compare", "callback"}  # type: ignore[index]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(30) == 0


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """``--workdir .`` once deleted the current directory: only a folder the demo built is rebuilt."""
    precious = tmp_path / "project"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = subprocess.run(
        [sys.executable, "-m", "cupid_airflow", "demo", "--workdir", "."],
        capture_output=True, text=True, cwd=precious, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not empty and was not made by the demo" in result.stderr and str(precious) in result.stderr
    assert (precious / "notes.txt").read_text() == "keep me" and sorted(p.name for p in precious.iterdir()) == [
        "notes.txt"
    ]

    from cupid_airflow.demo import MARKER, WorkdirError, prepare_workdir

    with pytest.raises(WorkdirError, match="is a file"):
        prepare_workdir(precious / "notes.txt")
    made = tmp_path / "made"
    prepare_workdir(made)  # a new folder: created and marked
    (made / "dags").mkdir()
    (made / "run.log").write_text("the last run")
    (made / "mine.txt").write_text("put here by the user")
    prepare_workdir(made)  # marked: what the demo wrote goes, nothing else
    assert sorted(p.name for p in made.iterdir()) == [MARKER, "mine.txt"]
