"""``python -m cupid_airflow``, run as a user runs it: a subprocess, exit codes and printed lines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import REPO, sample_config

WriteConfig = Callable[[str, dict[str, Any] | str], Path]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cupid_airflow", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_validate_default_folder_all_ok(write_config: WriteConfig, cli_env: dict[str, str], configs_dir: Path) -> None:
    write_config("user.json", sample_config())
    result = run("validate", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{configs_dir / 'user.json'}: OK -> cupid_user\n"


def test_validate_reports_each_error_and_fails(
    write_config: WriteConfig, cli_env: dict[str, str], configs_dir: Path
) -> None:
    write_config("a_good.json", sample_config())
    bad = sample_config(workerNumbr=3)
    bad["src"]["table"] = "user; DROP TABLE x"
    write_config("b_bad.json", bad)

    result = run("validate", str(configs_dir), env=cli_env)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    bad_path = configs_dir / "b_bad.json"
    assert lines[0] == f"{configs_dir / 'a_good.json'}: OK -> cupid_a_good"
    assert lines[1].startswith(f"{bad_path}: src.table: 'user; DROP TABLE x' is not a table name")
    assert lines[2] == f"{bad_path}: unknown key 'workerNumbr'; did you mean 'workerNumber'?"
    assert len(lines) == 3


def test_validate_single_files_and_missing_paths(
    write_config: WriteConfig, cli_env: dict[str, str], tmp_path: Path
) -> None:
    good = write_config("user.json", sample_config())
    assert run("validate", str(good), env=cli_env).returncode == 0
    missing = run("validate", str(good), str(tmp_path / "nope.json"), env=cli_env)
    assert missing.returncode == 1
    assert f"{tmp_path / 'nope.json'}: no such file or folder" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none_found = run("validate", str(empty), env=cli_env)
    assert none_found.returncode == 1 and "no *.json config found" in none_found.stderr


def test_validate_repo_examples_without_env(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = run("validate", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dags/configs/orders.json: OK -> cupid_orders_1, cupid_orders_cache" in result.stdout


def test_help() -> None:
    top = run("--help")
    assert top.returncode == 0 and "validate" in top.stdout and "demo" in top.stdout
    sub = run("validate", "--help")
    assert sub.returncode == 0 and "CUPID_CONFIG_DIR" in sub.stdout
    assert run().returncode == 2  # a command is required


def test_validate_lists_reconcile_dags(write_config: WriteConfig, cli_env: dict[str, str], configs_dir: Path) -> None:
    write_config("user.json", sample_config(reconcile={"schedule": "@daily"}))
    result = run("validate", env=cli_env)
    assert result.stdout == f"{configs_dir / 'user.json'}: OK -> cupid_user, cupid_user_reconcile\n", result.stderr


def test_validate_reports_a_clash_with_a_reconcile_dag(
    write_config: WriteConfig, cli_env: dict[str, str], configs_dir: Path
) -> None:
    taker = sample_config()
    taker["des"][0]["dagId"] = "cupid_user_reconcile"
    write_config("a.json", taker)
    write_config("user.json", sample_config(reconcile={}))
    result = run("validate", env=cli_env)
    assert result.returncode == 1
    assert f"{configs_dir / 'a.json'}: OK -> cupid_user_reconcile" in result.stdout
    assert "user.json: des[0]: reconcile dag id 'cupid_user_reconcile' is already used by" in result.stdout


def test_validate_never_prints_a_secret_of_a_broken_config(
    write_config: WriteConfig, cli_env: dict[str, str], configs_dir: Path
) -> None:
    from tests.test_config import LEAKY_CONFIGS, pieces

    for case, (_, _, config) in LEAKY_CONFIGS.items():
        write_config(f"{case}.json", config)
    result = run("validate", env=cli_env)
    assert result.returncode == 1
    printed = result.stdout + result.stderr
    for case, (path, secret, _) in LEAKY_CONFIGS.items():
        assert f"{configs_dir / case}.json: {path}: " in result.stdout
        assert not [piece for piece in pieces(secret) if piece in printed], (case, printed)


def test_validate_catches_what_would_break_the_dag_file(
    write_config: WriteConfig, cli_env: dict[str, str], configs_dir: Path
) -> None:
    """Each used to print OK (or a traceback), then fail the import of every cupid DAG."""
    write_config("deep.json", '{"src": ' + "[" * 100_000 + "]" * 100_000 + "}")
    long_stem = "f" * 243
    two = sample_config()
    two["des"].append({**two["des"][0], "table": "user_cache"})
    write_config(f"{long_stem}.json", two)
    named = sample_config(reconcile={})
    named["des"][0]["dagId"] = "d" * 245
    write_config("named.json", named)
    write_config("many.json", sample_config(des=[sample_config()["des"][0]] * 501))
    with (configs_dir / "huge.json").open("wb") as f:
        f.truncate(100 * 1024 * 1024)

    result = run("validate", env=cli_env)

    assert result.returncode == 1
    assert result.stderr == ""
    assert sorted(result.stdout.splitlines()) == sorted(
        [
            f"{configs_dir / 'deep.json'}: arrays or objects are nested too deeply to be a config",
            f"{configs_dir / long_stem}.json: the file name makes the dag id 'cupid_{'f' * 34}'... of 251 characters; "
            "Airflow allows at most 250; shorten the file name or set a shorter des[0].dagId",
            f"{configs_dir / long_stem}.json: the file name makes the dag id 'cupid_{'f' * 34}'... of 251 characters; "
            "Airflow allows at most 250; shorten the file name or set a shorter des[1].dagId",
            f"{configs_dir / 'named.json'}: des[0].dagId: makes the reconcile dag id '{'d' * 40}'... of 255 "
            "characters; Airflow allows at most 250; shorten dagId",
            f"{configs_dir / 'many.json'}: des: 501 destinations; at most 500 per file (each one is a DAG); split "
            "them over several files",
            f"{configs_dir / 'huge.json'}: the file is larger than 1,048,576 bytes, the limit for a cupid config",
        ]
    )
