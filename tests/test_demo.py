"""``make demo`` as a new user runs it: a real run that finds and delivers every planted divergence,
then the UI command it prints, which must really show that run, each task's log included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.stack import free_port, wait_for


def _api(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
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
                return str(_api(f"{base}/auth/token")["access_token"])
            except OSError:
                return None

        bearer = wait_for(token, 90, "the demo's api-server")
        runs = _api(f"{base}/api/v2/dags/cupid_demo/dagRuns", bearer)["dag_runs"]
        assert [r["state"] for r in runs] == ["success"]
        run_url = f"{base}/api/v2/dags/cupid_demo/dagRuns/{urllib.parse.quote(runs[0]['dag_run_id'], safe='')}"
        tis = _api(f"{run_url}/taskInstances", bearer)["task_instances"]
        assert {t["task_id"] for t in tis} >= {"scan", "compare", "callback"}

        # The Logs tab: what the UI shows for each task is the task's own log, read from the file the
        # run wrote in the demo's home (plain dag.test() wrote none: "Could not read served logs").
        events: dict[str, list[str]] = {}
        for ti in tis:
            url = f"{run_url}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}?map_index={ti['map_index']}"
            content = _api(url, bearer)["content"]
            lines = [str(e.get("event", "")) for e in content]
            source = f"attempt={ti['try_number']}.log"
            assert any(line.startswith(str(tmp_path.resolve())) and line.endswith(source) for line in lines), lines
            operator = f"{ti['task_id'].capitalize()}Operator"
            assert any(operator in str(e.get("logger", "")) for e in content), (ti["task_id"], lines)
            events.setdefault(ti["task_id"], []).extend(lines)
        assert any(line.startswith("Claimed ids (0, 5000]") for line in events["scan"])
        assert any(line.startswith("Compared 5000 source rows") for line in events["compare"])
        assert "Delivered 107 of 107 pending events (107 in all)" in events["callback"]
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
