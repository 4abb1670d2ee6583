"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from cupid_airflow import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "cupid-airflow",
        "name": "cupid",
        "description": "Data synchronization compensation for MySQL (a port of cupid-go to Airflow 3).",
        "versions": [__version__],
        "hooks": [
            {
                "integration-name": "cupid",
                "python-modules": [
                    "cupid_airflow.hooks.pushbear",
                    "cupid_airflow.hooks.callback",
                    "cupid_airflow.hooks.table",
                ],
            }
        ],
        "connection-types": [
            {"hook-class-name": "cupid_airflow.hooks.pushbear.PushBearHook", "connection-type": "pushbear"}
        ],
        "notifications": ["cupid_airflow.notifiers.pushbear.PushBearNotifier"],
        "operators": [
            {
                "integration-name": "cupid",
                "python-modules": [
                    "cupid_airflow.operators.scan",
                    "cupid_airflow.operators.scan_insert",
                    "cupid_airflow.operators.scan_update",
                    "cupid_airflow.operators.compare",
                    "cupid_airflow.operators.callback",
                ],
            }
        ],
        "integrations": [
            {
                "integration-name": "cupid",
                "external-doc-url": "https://github.com/masixun71/cupid-go",
                "tags": ["software"],
            }
        ],
    }
