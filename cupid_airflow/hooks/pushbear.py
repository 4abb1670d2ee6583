"""PushBear (WeChat push) alerts: ``GET <base>/sub?sendkey=..&text=..&desp=..``, as cupid-go sends them.

The base URL and, optionally, the sendkey (as its password) come from the ``pushbear_default``
connection, so alerts can go to a mirror or a test server; without that connection the public
service is used.
"""

from __future__ import annotations

from typing import Any

import requests
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

__all__ = ["DEFAULT_BASE_URL", "PushBearHook"]

DEFAULT_BASE_URL = "https://pushbear.ftqq.com"
TIMEOUT_SECONDS = 10


class PushBearHook(BaseHook):
    """Sends one PushBear message.

    :param pushbear_conn_id: connection with the service's base URL (host, or a full URL in host)
        and the sendkey as password; optional.
    :param sendkey: the key to send with; wins over the connection's password.
    """

    conn_name_attr = "pushbear_conn_id"
    default_conn_name = "pushbear_default"
    conn_type = "pushbear"
    hook_name = "PushBear"

    def __init__(self, pushbear_conn_id: str = default_conn_name, sendkey: str | None = None) -> None:
        super().__init__()
        self.pushbear_conn_id = pushbear_conn_id
        self.sendkey = sendkey or None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "extra"],
            "relabeling": {"host": "Base URL (default https://pushbear.ftqq.com)", "password": "SendKey"},
        }

    @staticmethod
    def _base_url(connection: Any) -> str:
        host = (connection.host or "").rstrip("/")
        if not host:
            return DEFAULT_BASE_URL
        if "://" not in host:
            host = f"{connection.schema or 'https'}://{host}"
        return f"{host}:{connection.port}" if connection.port else host

    def _resolve(self, connection: Any | None) -> tuple[str, str | None]:
        base = self._base_url(connection) if connection is not None else DEFAULT_BASE_URL
        sendkey = self.sendkey or (connection.password if connection is not None else None)
        if sendkey:
            mask_secret(sendkey)
        return base, sendkey

    def _connection(self) -> Any | None:
        try:
            return self.get_connection(self.pushbear_conn_id)
        except AirflowNotFoundException:
            return None

    def send(self, text: str, desp: str) -> bool:
        """Send; return whether PushBear took it. Never raises: an alert must not fail a task."""
        try:
            base, sendkey = self._resolve(self._connection())
            if not sendkey:
                self.log.info("No PushBear sendkey (config pushbearSendKey or connection password): alert not sent")
                return False
            response = requests.get(
                f"{base}/sub", params={"sendkey": sendkey, "text": text, "desp": desp}, timeout=TIMEOUT_SECONDS
            )
        except Exception as e:
            self.log.error("PushBear alert not sent: %s: %s", type(e).__name__, e)
            return False
        if not response.ok:
            self.log.error("PushBear alert not accepted: HTTP %s %s", response.status_code, response.text[:200])
            return False
        self.log.info("PushBear alert sent: %s", text)
        return True

    async def async_send(self, text: str, desp: str) -> bool:
        """:meth:`send` for the triggerer (deadline alerts), without blocking its event loop."""
        import aiohttp

        try:
            try:
                connection = await self.aget_connection(self.pushbear_conn_id)
            except AirflowNotFoundException:
                connection = None
            base, sendkey = self._resolve(connection)
            if not sendkey:
                self.log.info("No PushBear sendkey: deadline alert not sent")
                return False
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                params = {"sendkey": sendkey, "text": text, "desp": desp}
                async with session.get(f"{base}/sub", params=params) as response:
                    if response.status >= 300:
                        self.log.error("PushBear alert not accepted: HTTP %s", response.status)
                        return False
        except Exception as e:
            self.log.error("PushBear alert not sent: %s: %s", type(e).__name__, e)
            return False
        self.log.info("PushBear alert sent: %s", text)
        return True
