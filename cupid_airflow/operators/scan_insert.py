"""Claims the next range of new source ids and cuts it into partitions for the mapped compare."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context, Variable
from airflow.sdk.exceptions import AirflowFailException

from cupid_airflow.hooks.table import ID_COLUMN
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.partitions import id_partitions

__all__ = ["ScanInsertOperator"]

#: Claims remembered per DAG, so a retried scan of a recent run gets its range back.
KEEP_CLAIMS = 50


class ScanInsertOperator(CupidOperator):
    """Claims ``(cursor, upto]`` of the source's ids and returns it as partitions.

    The cursor (the last claimed id) lives in the Airflow Variable ``cupid.<dag_id>.insert_cursor``
    with the recent claims by run id: a retried scan of the same run gets the same range back, and
    runs never overlap because the scan tasks of a DAG run one at a time
    (``max_active_tis_per_dag=1``). A claim holds at most ``maxRowsPerRun`` rows, so a backlog
    drains over several runs.

    Run parameters (``airflow dags trigger --conf``): ``start_id`` restarts the cursor there, like
    cupid's ``-s``; ``start_id`` with ``end_id`` re-checks that range and leaves the cursor alone.
    """

    ui_color = "#d9f2e6"

    def execute(self, context: Context) -> list[dict[str, Any]]:
        params = context["params"]
        start_id, end_id = params.get("start_id"), params.get("end_id")
        chunk = self.config.chunk_size
        with self.source_table() as table:
            if end_id is not None:
                if start_id is None or end_id < start_id:
                    raise AirflowFailException(f"end_id={end_id} needs a start_id <= end_id; got start_id={start_id}")
                self.log.info("Re-checking ids %s..%s; the insert cursor is not moved", start_id, end_id)
                return self._partitions(table, start_id - 1, end_id, chunk)
            after, upto = self._claim(table, context["run_id"], start_id)
            return self._partitions(table, after, upto, chunk)

    def _claim(self, table: Any, run_id: str, start_id: int | None) -> tuple[int, int]:
        key = self.state_key("insert_cursor")
        state = Variable.get(key, default=None, deserialize_json=True) or {}
        claims: dict[str, list[int]] = state.get("claims", {})
        if run_id in claims:
            after, upto = claims[run_id]
            self.log.info("Run %s already claimed ids (%s, %s]: reusing that claim", run_id, after, upto)
            return after, upto
        if start_id is not None:
            after = start_id - 1
            self.log.info("start_id=%s: the insert cursor restarts at %s", start_id, after)
        else:
            after = state.get("cursor", self.config.src.start_id - 1)
        max_id = table.max_id()
        if max_id is None or max_id <= after:
            upto = after
        else:
            bound = table.nth_after(ID_COLUMN, after, None, self.config.max_rows_per_run - 1)
            upto = int(max_id) if bound is None else min(int(bound), int(max_id))
        claims[run_id] = [after, upto]
        state = {"cursor": upto, "claims": dict(list(claims.items())[-KEEP_CLAIMS:])}
        Variable.set(key, state, serialize_json=True)
        self.log.info("Claimed ids (%s, %s] (source max id %s); cursor now %s", after, upto, max_id, upto)
        return after, upto

    def _partitions(self, table: Any, after: int, upto: int, chunk: int) -> list[dict[str, Any]]:
        parts = id_partitions(table, after, upto, chunk, ID_COLUMN)
        self.log.info("%d partition(s) of about %d rows for ids (%s, %s]", len(parts), chunk, after, upto)
        return parts
