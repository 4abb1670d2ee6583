"""cupid endpoints (a Go DSN or an Airflow connection id) -> Airflow connections.

A DSN becomes a ``mysql`` :class:`~airflow.sdk.Connection` that lives only in memory: it is never
stored, and its password is registered with Airflow's secrets masker before anything can log it.
"""

from __future__ import annotations

import json

from airflow.sdk import Connection
from airflow.sdk.log import mask_secret

from cupid_airflow.dialects import DSN_DIALECT
from cupid_airflow.dsn import parse_go_dsn

__all__ = ["connection_from_dsn"]


def connection_from_dsn(dsn: str, conn_id: str) -> Connection:
    """A mysql Connection with the DSN's host, port or socket, credentials, database and options."""
    parsed = parse_go_dsn(dsn)
    if parsed.password:
        mask_secret(parsed.password)
    return Connection(
        conn_id=conn_id,
        conn_type=DSN_DIALECT.conn_type,
        host=parsed.host or "localhost",
        port=parsed.port,
        login=parsed.user or None,
        password=parsed.password,
        schema=parsed.database or None,
        extra=json.dumps(parsed.client_options()),
    )
