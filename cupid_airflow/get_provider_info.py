"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point.

Every operator, hook, trigger and notifier module is listed (tests/test_provider.py checks the
package against it). The ``cupid`` plugin (the cupid view and the run notes) is registered by the
``airflow.plugins`` entry point instead of a ``plugins`` entry here: Airflow loads entry-point
plugins in every component, provider plugins only with ``[core] lazy_discover_providers`` off,
and with both it would register the plugin twice and report the second as an import error.
"""

from __future__ import annotations

from typing import Any

from cupid_airflow import __version__

INTEGRATION = "cupid"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "cupid-airflow",
        "name": "cupid",
        "description": "Data synchronization compensation for MySQL (a port of cupid-go to Airflow 3).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://github.com/masixun71/cupid-go",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "cupid_airflow.operators.scan",
                    "cupid_airflow.operators.compare",
                    "cupid_airflow.operators.callback",
                    "cupid_airflow.operators.reconcile",
                    "cupid_airflow.operators.repair",
                    "cupid_airflow.operators.config_error",
                ],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "cupid_airflow.hooks.pushbear",
                    "cupid_airflow.hooks.callback",
                    "cupid_airflow.hooks.table",
                    "cupid_airflow.hooks.connections",
                    "cupid_airflow.hooks.variables",
                ],
            }
        ],
        "triggers": [{"integration-name": INTEGRATION, "python-modules": ["cupid_airflow.triggers.watch"]}],
        "connection-types": [
            {"hook-class-name": "cupid_airflow.hooks.pushbear.PushBearHook", "connection-type": "pushbear"}
        ],
        "notifications": ["cupid_airflow.notifiers.pushbear.PushBearNotifier"],
    }
