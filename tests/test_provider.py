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


def test_provider_info_lists_every_operator_hook_trigger_and_notifier_module() -> None:
    from cupid_airflow.get_provider_info import get_provider_info

    info = get_provider_info()
    package = Path(__file__).resolve().parent.parent / "cupid_airflow"
    listed = {
        folder: {m for entry in info[key] for m in entry["python-modules"]}
        for folder, key in (("operators", "operators"), ("hooks", "hooks"), ("triggers", "triggers"))
    }
    for folder, modules in listed.items():
        stems = {p.stem for p in (package / folder).glob("*.py")} - {"__init__", "base"}  # base: no task of its own
        found = {f"cupid_airflow.{folder}.{stem}" for stem in stems}
        assert modules == found, folder
    notifiers = {
        f"cupid_airflow.notifiers.{p.stem}" for p in (package / "notifiers").glob("*.py") if p.stem != "__init__"
    }
    assert {n.rsplit(".", 1)[0] for n in info["notifications"]} == notifiers


def test_the_plugin_is_registered_once() -> None:
    """By the ``airflow.plugins`` entry point, not also in the provider info (Airflow would load
    it twice when providers are discovered eagerly)."""
    from importlib.metadata import entry_points

    from cupid_airflow.get_provider_info import get_provider_info

    plugins = [e for e in entry_points(group="airflow.plugins") if e.value.startswith("cupid_airflow")]
    assert [e.value for e in plugins] == ["cupid_airflow.plugins:CupidPlugin"]
    assert "plugins" not in get_provider_info()
