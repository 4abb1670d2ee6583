#!/usr/bin/env python3
"""What ``make install`` needs before pip: a C compiler, pkg-config, the MariaDB/MySQL client
headers and Python's own headers and venv module (mysqlclient builds from source).

Checks them; when some are missing, installs them with apt-get (as root, or through sudo), or
stops with one line that names the exact command to run. Standard library only: it runs before
the virtualenv exists. Every probe goes through PATH, so tests can fake the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

#: pkg-config names the mysqlclient build tries, in its order.
CLIENT_LIBRARIES = ("mysqlclient", "mariadb", "libmariadb", "perconaserverclient")


def _runs(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def missing_packages() -> list[str]:
    """Debian package names for what this machine lacks, in install order."""
    missing: list[str] = []
    if not (shutil.which("cc") or shutil.which("gcc")):
        missing.append("gcc")
    if not shutil.which("pkg-config"):
        missing += ["pkg-config", "libmariadb-dev"]  # without pkg-config the headers cannot be found either
    elif not any(_runs("pkg-config", "--exists", name) for name in CLIENT_LIBRARIES):
        missing.append("libmariadb-dev")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        missing.append("python3-dev")
    if not _runs(sys.executable, "-c", "import ensurepip, venv"):
        missing.append("python3-venv")
    return missing


def _is_root() -> bool:
    try:
        out = subprocess.run(["id", "-u"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out == "0"


def install_command(packages: list[str]) -> list[str] | None:
    """The apt-get command this user can run, or None when there is none (no apt, not root, no sudo)."""
    if not shutil.which("apt-get"):
        return None
    prefix = [] if _is_root() else ["sudo"] if shutil.which("sudo") else None
    if prefix is None:
        return None
    return [*prefix, "apt-get", "install", "-y", "--no-install-recommends", *packages]


def main() -> int:
    packages = missing_packages()
    if not packages:
        return 0
    command = install_command(packages)
    wanted = " ".join(packages)
    if command is None:
        print(
            f"cupid-airflow: missing build dependencies ({wanted}); run: sudo apt-get install -y {wanted} "
            "(or your system's equivalents), then run make again",
            file=sys.stderr,
        )
        return 1
    print(f"cupid-airflow: installing build dependencies: {' '.join(command)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = [*command[: command.index("apt-get")], "apt-get", "update", "-qq"]
    install = [*command[: -len(packages)], "-qq", *packages]
    for step in (update, install):
        if subprocess.run(step, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            print(f"cupid-airflow: the install failed; run it yourself: {' '.join(command)}", file=sys.stderr)
            return 1
    still = missing_packages()
    if still:
        print(f"cupid-airflow: still missing after the install: {' '.join(still)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
