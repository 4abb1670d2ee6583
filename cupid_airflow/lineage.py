"""OpenLineage for cupid tasks: the source and destination tables of a pair as datasets, and what a
task found as data-quality facets, for ``apache-airflow-providers-openlineage`` to emit.

The provider is an optional extra (``cupid-airflow[openlineage]``): nothing here imports it, or
``openlineage``, until its listener asks a task for its lineage, which it only does when it is
installed and configured. Dataset names follow OpenLineage's naming spec (``mysql://host:port`` and
``database.table``; ``postgres://host:port`` and ``database.schema.table``) and are built from the
host and port alone: a DSN's user and password never reach a namespace or a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cupid_airflow.core.divergence import Divergence
from cupid_airflow.dialects import DSN_DIALECT, dialect_for
from cupid_airflow.dsn import parse_go_dsn

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from cupid_airflow.config import Destination, Source
    from cupid_airflow.core.tally import Tally
    from cupid_airflow.pair import SyncPair

__all__ = ["TableId", "connection_table", "endpoint_table", "operator_lineage"]


@dataclass(frozen=True)
class TableId:
    """A table as OpenLineage names it: its server (``namespace``) and its ``name`` there."""

    namespace: str
    name: str


def endpoint_table(endpoint: Source | Destination) -> TableId:
    """The table of a config endpoint: from its DSN's host and port, or from its Airflow
    connection's (looked up: call it where the task runs)."""
    if endpoint.dsn is not None:
        dsn = parse_go_dsn(endpoint.dsn)
        host = dsn.host if dsn.unix_socket is None else "localhost"
        return connection_table(DSN_DIALECT.conn_type, host, dsn.port, dsn.database, endpoint.table)
    from airflow.sdk import BaseHook

    assert endpoint.conn_id is not None
    connection = BaseHook.get_connection(endpoint.conn_id)
    return connection_table(
        connection.conn_type or "", connection.host, connection.port, connection.schema, endpoint.table
    )


def connection_table(conn_type: str, host: str | None, port: int | None, database: str | None, table: str) -> TableId:
    """The OpenLineage id of ``table`` on a server of ``conn_type`` (``database`` is the connection's
    schema field, which MySQL and PostgreSQL connections use for the database), as its dialect
    names it (:meth:`~cupid_airflow.dialects.base.Dialect.lineage_id`)."""
    return TableId(*dialect_for(conn_type).lineage_id(host, port, database, table))


def operator_lineage(pair: SyncPair, tally: Tally | None) -> OperatorLineage[Any, Any]:
    """What a task of ``pair`` reports to OpenLineage, given what it did (its tally).

    A task that compared (``rows`` in its tally) reads the source, which is the input with the
    rows it compared as a ``dataQualityMetrics`` facet, and checks the destination, which is the
    output with a ``dataQualityAssertions`` facet: one assertion per divergence type it looks for,
    failed when it found any, with the count as ``actual``. A scan that only claimed ids reads the
    source alone; a callback touches no table. A task that failed before it said what it did
    reports both tables, without facets."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dqa
    from openlineage.client.facet_v2 import data_quality_metrics_input_dataset as dqm

    task = tally.get("task") if tally else None
    if task == "callback":
        return OperatorLineage()
    src, des = endpoint_table(pair.src), endpoint_table(pair.des)
    if tally is None or "rows" not in tally:
        outputs = [] if task == "scan" else [OutputDataset(des.namespace, des.name)]
        return OperatorLineage(inputs=[InputDataset(src.namespace, src.name)], outputs=outputs)
    found = tally.get("found", {})
    kinds = tuple(Divergence) if task == "reconcile" else Divergence.scanned()
    assertions = [
        dqa.Assertion(
            assertion=kind.assertion,
            success=not found.get(kind.key, 0),
            description=kind.assertion_text,
            expected="0",
            actual=str(found.get(kind.key, 0)),
            params={"rowsCompared": tally["rows"], "byColumn": pair.des.by_column},
        )
        for kind in kinds
    ]
    metrics: dict[str, Any] = {
        "dataQualityMetrics": dqm.DataQualityMetricsInputDatasetFacet(columnMetrics={}, rowCount=tally["rows"])
    }
    # The spec types this facet as an input facet; it goes in the output's plain facets (its JSON
    # is a valid DatasetFacet), so the findings sit on the table they are about.
    checks: dict[str, Any] = {"dataQualityAssertions": dqa.DataQualityAssertionsDatasetFacet(assertions)}
    return OperatorLineage(
        inputs=[InputDataset(src.namespace, src.name, inputFacets=metrics)],
        outputs=[OutputDataset(des.namespace, des.name, facets=checks)],
    )
