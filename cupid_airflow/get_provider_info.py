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
        "integrations": [
            {
                "integration-name": "cupid",
                "external-doc-url": "https://github.com/masixun71/cupid-go",
                "tags": ["software"],
            }
        ],
    }
