"""Run a factory DAG for real with ``dag.test()`` and read back what Airflow recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow.dag_processing.dagbag import DagBag
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

from cupid_airflow.core.events import event_chunk_key
from tests.conftest import REPO

DAG_FILE = REPO / "dags" / "cupid_dags.py"


@dataclass
class RunResult:
    state: str
    run_id: str
    task_states: dict[tuple[str, int], str]
    xcoms: dict[tuple[str, int], Any] = field(default_factory=dict)
    tries: dict[tuple[str, int], int] = field(default_factory=dict)
    other_xcoms: dict[tuple[str, int, str], Any] = field(default_factory=dict)  # keys other than return_value
    labels: dict[tuple[str, int], str | None] = field(default_factory=dict)  # rendered map_index_template
    note: str | None = None  # the run's note (cupid's listener writes it when the run ends)

    def output(self, task_id: str) -> list[Any]:
        """Return values of ``task_id``'s instances, in map-index order."""
        return [v for (t, _), v in sorted(self.xcoms.items(), key=lambda kv: kv[0][1]) if t == task_id]

    @property
    def partitions(self) -> list[dict[str, Any]]:
        return [p for out in self.output("scan") for p in out]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every compare's events, read from their XCom chunks where they were chunked."""
        found: list[dict[str, Any]] = []
        for out in self.output("compare"):
            if isinstance(out, dict):
                keys = [event_chunk_key(i) for i in range(out["chunks"])]
                found += [e for key in keys for e in self.other_xcoms[(out["task_id"], out["map_index"], key)]]
            else:
                found += out or []
        return found


def load_dag(dag_id: str) -> Any:
    bag = DagBag(dag_folder=str(DAG_FILE), bundle_path=REPO / "dags")
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def run_dag(dag_id: str, conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> RunResult:
    dag = load_dag(dag_id)
    kwargs: dict[str, Any] = {"run_conf": conf}
    if logical_date is not None:
        kwargs["logical_date"] = logical_date
        kwargs["run_after"] = logical_date
    dr = dag.test(**kwargs)
    with create_session() as session:
        tis = dr.get_task_instances(session=session)
        states = {(ti.task_id, ti.map_index): str(ti.state) for ti in tis}
        tries = {(ti.task_id, ti.map_index): ti.try_number for ti in tis}
        labels = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in tis}
        note = session.merge(dr).note
        rows = session.scalars(select(XComModel).where(XComModel.run_id == dr.run_id, XComModel.dag_id == dag_id))
        xcoms, other = {}, {}
        for x in rows:
            if x.key == "return_value":
                xcoms[(x.task_id, x.map_index)] = _value(XComModel.deserialize_value(x))
            else:
                other[(x.task_id, x.map_index, x.key)] = _value(XComModel.deserialize_value(x))
    return RunResult(str(dr.state), dr.run_id, states, xcoms, tries, other, labels, note)


def _value(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
