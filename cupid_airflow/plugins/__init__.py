"""cupid's Airflow plugin (entry point ``airflow.plugins``): the cupid view in the UI's nav and
the listener that writes run notes. Loaded by every Airflow component; the view's app is built
only in the api-server, which is the one component that asks for ``fastapi_apps``."""

from __future__ import annotations

import logging
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from cupid_airflow.plugins import run_notes
from cupid_airflow.plugins.drift_view import URL_PREFIX

__all__ = ["CupidPlugin"]

log = logging.getLogger(__name__)


class _LazyApps(list[Any]):
    """The view's FastAPI app, built on first use: the scheduler and workers load the plugin too,
    and need neither FastAPI nor the app."""

    def __iter__(self) -> Any:
        if not len(self) and not self.failed:
            # Airflow reports a plugin that fails at import, but builds apps with no such guard:
            # an error here must cost the view, not the api-server's start.
            try:
                from cupid_airflow.plugins.drift_view import create_app

                self.append({"app": create_app(), "url_prefix": URL_PREFIX, "name": "cupid drift"})
            except Exception:
                self.failed = True
                log.exception("cupid: the cupid view could not be built; the api-server runs without it")
        return super().__iter__()

    failed = False


class CupidPlugin(AirflowPlugin):
    name = "cupid"
    listeners = [run_notes]  # noqa: RUF012  (AirflowPlugin's own attributes)
    fastapi_apps = _LazyApps()
    external_views = [  # noqa: RUF012
        {
            "name": "Cupid drift",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "cupid-drift",
        }
    ]
