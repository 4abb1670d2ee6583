"""Run params are open to anyone allowed to trigger a run: none of them may switch checking off."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import ParamValidationError
from airflow.serialization.serialized_objects import BaseSerialization, DagSerialization

from cupid_airflow.run_params import RunParam, run_params
from tests.airflow_run import load_dag, run_dag
from tests.conftest import sample_config
from tests.pairs import Pair, pair
from tests.test_dag_factory import WriteConfig
from tests.test_scan_compare import insert_cursor

__all__ = ["pair"]  # the fixture

pytestmark = pytest.mark.usefixtures("airflow_db")

HUGE = 10**30


def test_a_start_id_cannot_move_the_cursor_forward(pair: Pair, capfd: pytest.CaptureFixture[str]) -> None:
    """Past the source's end (10^30), or just to its end + 1 while unchecked rows wait below it:
    either would skip rows. The run fails, the cursor stays, the waiting row is still reported."""
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 4)])
    pair.run()
    assert insert_cursor(pair)["cursor"] == 3
    pair.add_source(("waiting", "x", None, None, None))  # id 4, missing at the destination, not yet claimed

    for start_id in (HUGE, 5):  # 5: the table's end + 1 would skip id 4
        result = run_dag(pair.dag_id, conf={"start_id": start_id})
        assert result.task_states[("scan", -1)] == "failed" and result.tries[("scan", -1)] == 1
        assert insert_cursor(pair)["cursor"] == 3
    output = "".join(capfd.readouterr())
    assert f"run param start_id={HUGE} would skip ids nobody checked: the insert cursor is at 3" in output
    assert "start_id may be at most 4" in output

    pair.run(conf={"start_id": 4})  # where the cursor stands: allowed, skips nothing
    assert [b["byValue"] for b in pair.callbacks()] == ["waiting"]
    pair.run(conf={"start_id": 2})  # back: re-checks
    assert insert_cursor(pair)["cursor"] == 4


def test_the_limit_of_start_id() -> None:
    from cupid_airflow.core.claims import start_id_limit

    assert start_id_limit(cursor=3, first_cursor=0, max_id=10) == 4  # forward skips nothing beyond the cursor
    assert start_id_limit(cursor=None, first_cursor=99, max_id=500) == 100  # before the first run: src.startId
    assert start_id_limit(cursor=5000, first_cursor=0, max_id=3000) == 3001  # AUTO_INCREMENT reset: the end + 1
    assert start_id_limit(cursor=None, first_cursor=0, max_id=None) == 1  # an empty table


def test_a_huge_end_id_rechecks_up_to_the_source_end_and_never_moves_the_cursor(pair: Pair) -> None:
    pair.add_source(*[(f"n{i}", "x", None, None, None) for i in range(1, 4)])
    pair.run()

    result = pair.run(conf={"start_id": 2, "end_id": HUGE})

    assert result.partitions == [{"version": 1, "kind": "ids", "after": 1, "upto": 3}]
    assert sorted(b["byValue"] for b in pair.callbacks()) == ["n2", "n3"]
    assert insert_cursor(pair)["cursor"] == 3
    pair.add_source(("late", "x", None, None, None))
    pair.run()
    assert [b["byValue"] for b in pair.callbacks()] == ["late"]


#: Values a trigger must refuse, and what the refusal says.
BAD_VALUES = [
    ({"start_id": "x"}, "Invalid input for param start_id: 'x' is not of type 'null', 'integer'"),
    ({"start_id": 0}, "Invalid input for param start_id: 0 is less than the minimum of 1"),
    ({"end_id": 2.5}, "Invalid input for param end_id: 2.5 is not of type 'null', 'integer'"),
    ({"since": 20250601}, "Invalid input for param since: 20250601 is not of type 'null', 'string'"),
]


def test_the_trigger_form_gets_what_airflows_param_would_give(write_config: WriteConfig) -> None:
    """RunParam only checks its schema once: the serialized params (the UI's form, the API's
    check of a trigger's conf) are exactly those of Airflow's own Param."""
    write_config("user.json", sample_config())
    dag = load_dag("cupid_user")
    serialized = DagSerialization.to_dict(dag)["dag"]
    plain = ParamsDict({k: Param(p.value, p.description, schema=p.schema) for k, p in run_params().items()})

    assert serialized["params"] == BaseSerialization._serialize_params_dict(plain)
    assert [k for k, _ in serialized["params"]] == ["start_id", "end_id", "since", "until"]
    assert all(p["description"] and p["schema"]["__var"]["type"][0] == "null" for _, p in serialized["params"])
    assert json.dumps(serialized["params"]).count("airflow.sdk.definitions.param.Param") == 4


@pytest.mark.parametrize(("conf", "message"), BAD_VALUES)
def test_a_bad_value_is_refused_at_trigger_time(write_config: WriteConfig, conf: dict[str, Any], message: str) -> None:
    """The API server (``airflow dags trigger``, the UI) checks conf against the serialized params
    (SerializedDAG.create_dagrun); a task process checks it again with the parsed DAG's RunParams."""
    write_config("user.json", sample_config())
    dag = load_dag("cupid_user")
    server_side = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    with pytest.raises(ParamValidationError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        server_side.params.deep_merge(conf).validate()
    task_side = ParamsDict(dag.params)
    with pytest.raises(ParamValidationError) as refused:
        task_side.update(conf)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("value", [None, 1, 10**30, "x", 0, -1, 2.5, 1.0, True, [1], "2025-06-01T00:00:00Z"])
def test_run_param_resolves_like_param(value: Any) -> None:
    schema = {"type": ["null", "integer"], "minimum": 1}
    mine, theirs = RunParam(None, "d", **schema), Param(None, "d", **schema)
    outcomes = []
    for param in (mine, theirs):
        try:
            outcomes.append(("ok", param.resolve(value)))
        except ParamValidationError as e:
            outcomes.append(("refused", str(e)))
    assert outcomes[0] == outcomes[1]
    assert mine.resolve(value, suppress_exception=True) == theirs.resolve(value, suppress_exception=True)


def test_a_broken_schema_fails_when_the_param_is_made() -> None:
    with pytest.raises(Exception, match="is not valid under any of the given schemas"):
        RunParam(None, type="integer-ish")


def test_a_since_that_is_no_date_time_fails_the_update_scan(pair: Pair, capfd: pytest.CaptureFixture[str]) -> None:
    """jsonschema checks the date-time format only with rfc3339-validator installed (it is not):
    the update scan refuses it, without retries."""
    pair.configure(src={"update": True, "updateColumn": "update_time"})
    result = run_dag(pair.dag_id, conf={"since": "yesterday", "until": "2025-06-02T00:00:00Z"})

    assert result.task_states[("scan", -1)] == "failed" and result.tries[("scan", -1)] == 1
    assert "since='yesterday' is not an ISO 8601 date-time" in "".join(capfd.readouterr())
