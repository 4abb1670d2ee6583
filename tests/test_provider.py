"""Airflow sees cupid-airflow as a provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cupid_airflow import __version__


def test_airflow_providers_list_shows_cupid() -> None:
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [str(airflow), "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    providers = {p["package_name"]: p for p in json.loads(result.stdout[result.stdout.index("[") :])}
    assert providers["cupid-airflow"]["version"] == __version__


def test_provider_info_is_valid_for_airflow() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    info = manager.providers["cupid-airflow"]
    assert info.version == __version__
    assert info.data["name"] == "cupid"
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook = ProvidersManagerTaskRuntime().hooks["pushbear"]
    assert hook is not None and hook.hook_class_name == "cupid_airflow.hooks.pushbear.PushBearHook"
    assert "cupid_airflow.notifiers.pushbear.PushBearNotifier" in manager.notification
