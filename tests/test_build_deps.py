"""``make install``'s check of the build dependencies, on fake machines: a PATH of stand-in
commands that says what is installed, who the user is, and records what apt-get was asked."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "build_deps.py"


def fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def machine(tmp_path: Path, *, uid: int, has: set[str], installs: bool = True) -> tuple[Path, Path]:
    """A PATH with only the named tools; apt-get records its arguments (and 'installs' when asked)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    fake(bin_dir, "id", f"echo {uid}")
    if "gcc" in has:
        fake(bin_dir, "cc", "exit 0")
    if "pkg-config" in has:
        found = "exit 0" if "libmariadb-dev" in has else f'test -f "{tmp_path}/installed" && exit 0; exit 1'
        fake(bin_dir, "pkg-config", found)
    if "apt-get" in has:
        action = f': > "{tmp_path}/installed"' if installs else "exit 100"
        fake(bin_dir, "apt-get", f'echo "$@" >> "{record}"\ncase "$1" in update) exit 0;; esac\n{action}')
    if "sudo" in has:
        fake(bin_dir, "sudo", f'echo sudo >> "{record}"\nexec "$@"')
    return bin_dir, record


def check(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": str(bin_dir)}
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)


def test_nothing_to_do_on_a_ready_machine(tmp_path: Path) -> None:
    bin_dir, record = machine(tmp_path, uid=1000, has={"gcc", "pkg-config", "libmariadb-dev", "apt-get"})
    result = check(bin_dir)
    assert result.returncode == 0 and result.stderr == "" and not record.exists()


def test_root_installs_what_is_missing_with_apt_get(tmp_path: Path) -> None:
    bin_dir, record = machine(tmp_path, uid=0, has={"gcc", "pkg-config", "apt-get"})
    result = check(bin_dir)
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == [
        "update -qq",
        "install -y --no-install-recommends -qq libmariadb-dev",
    ]


def test_a_user_with_sudo_installs_through_sudo(tmp_path: Path) -> None:
    bin_dir, record = machine(tmp_path, uid=1000, has={"gcc", "pkg-config", "apt-get", "sudo"})
    result = check(bin_dir)
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines()[0] == "sudo"
    assert "sudo apt-get install -y --no-install-recommends libmariadb-dev" in result.stderr


@pytest.mark.parametrize("has", [{"apt-get"}, set()], ids=["no-sudo", "no-apt"])
def test_without_a_way_to_install_it_names_the_exact_command(tmp_path: Path, has: set[str]) -> None:
    bin_dir, record = machine(tmp_path, uid=1000, has=has)
    result = check(bin_dir)
    assert result.returncode == 1 and not record.exists()
    (line,) = result.stderr.splitlines()
    assert "run: sudo apt-get install -y gcc pkg-config libmariadb-dev" in line


def test_a_failed_install_says_so_and_how_to_retry(tmp_path: Path) -> None:
    bin_dir, _ = machine(tmp_path, uid=0, has={"gcc", "pkg-config", "apt-get"}, installs=False)
    result = check(bin_dir)
    assert result.returncode == 1
    assert "the install failed; run it yourself: apt-get install -y --no-install-recommends libmariadb-dev" in (
        result.stderr
    )
