"""The DAG factory, loaded the way the dag-processor loads it: a DagBag over the real dags/ folder."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Asset, AssetOrTimeSchedule, CronDataIntervalTimetable, DeltaDataIntervalTimetable
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.simple import NullTimetable

from cupid_airflow.dag_factory import MIN_SCHEDULE_SECONDS, safety_schedule
from cupid_airflow.names import CONFIG_ERROR_TAG
from tests.conftest import REPO, sample_config

DAG_FILE = REPO / "dags" / "cupid_dags.py"
WriteConfig = Callable[[str, dict[str, Any] | str], Path]


def load_bag() -> DagBag:
    return DagBag(dag_folder=str(DAG_FILE), bundle_path=REPO / "dags")


def two_destinations() -> dict[str, Any]:
    config = sample_config()
    second = {**config["des"][0], "table": "user_cache", "columns": {"number": "no", "name": "nick"}, "byColumn": "no"}
    config["des"].append(second)
    return config


def test_one_dag_per_destination_with_final_task_ids(write_config: WriteConfig) -> None:
    write_config("user.json", sample_config())
    write_config("orders.json", two_destinations())
    named = two_destinations()
    named["des"][1]["dagId"] = "orders_cache_pair"
    write_config("named.json", named)

    bag = load_bag()

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [
        "cupid_named_1",
        "cupid_orders_1",
        "cupid_orders_2",
        "cupid_user",
        "orders_cache_pair",
    ]
    dag = bag.dags["cupid_orders_2"]
    assert set(dag.task_dict) == {"scan", "compare", "callback"}
    assert dag.task_dict["compare"].upstream_task_ids == {"scan"}
    assert dag.task_dict["callback"].upstream_task_ids == {"compare"}
    assert dag.task_dict["compare"].is_mapped and dag.task_dict["callback"].is_mapped
    assert dag.task_dict["scan"].max_active_tis_per_dag == 1
    # the config file and the databases too
    assert set(dag.tags) == {"cupid", "config:orders.json", "src:app.user", "des:replica.user_cache"}
    assert dag.task_dict["compare"].partial_kwargs["destination"] == 1


def test_one_scan_task_whatever_is_scanned(write_config: WriteConfig) -> None:
    insert_only = sample_config()
    insert_only["src"]["update"] = False
    write_config("insert_only.json", insert_only)
    update_only = sample_config()
    update_only["src"]["insert"] = False
    write_config("update_only.json", update_only)

    bag = load_bag()

    for dag_id in ("cupid_insert_only", "cupid_update_only"):
        assert set(bag.dags[dag_id].task_dict) == {"scan", "compare", "callback"}
        assert bag.dags[dag_id].task_dict["compare"].upstream_task_ids == {"scan"}


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (None, DeltaDataIntervalTimetable(timedelta(seconds=MIN_SCHEDULE_SECONDS))),
        (300, DeltaDataIntervalTimetable(timedelta(seconds=300))),
        ("*/10 * * * *", CronDataIntervalTimetable("*/10 * * * *", timezone="UTC")),
        ("@hourly", CronDataIntervalTimetable("0 * * * *", timezone="UTC")),
    ],
)
def test_schedules_have_real_data_intervals(write_config: WriteConfig, schedule: Any, expected: Any) -> None:
    config = sample_config(watch=False) if schedule is None else sample_config(schedule=schedule, watch=False)
    write_config("user.json", config)
    assert load_bag().dags["cupid_user"].timetable == expected


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (None, safety_schedule("cupid_user")),
        (300, DeltaDataIntervalTimetable(timedelta(seconds=300))),
        ("@daily", CronDataIntervalTimetable("0 0 * * *", timezone="UTC")),
    ],
)
def test_a_watched_pair_runs_on_its_watcher_or_its_safety_schedule(
    write_config: WriteConfig, schedule: Any, expected: Any
) -> None:
    config = sample_config() if schedule is None else sample_config(schedule=schedule)
    path = write_config("user.json", config)
    timetable = load_bag().dags["cupid_user"].timetable

    assert isinstance(timetable, AssetOrTimeSchedule)
    assert timetable.timetable == expected
    asset = timetable.asset_condition
    assert isinstance(asset, Asset) and asset.name == "cupid-watch/cupid_user"
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "cupid_airflow.triggers.watch.SourceWatchTrigger"
    # the path, never the config's content: trigger arguments are stored in the metadata database
    assert set(kwargs) == {"config_file", "destination", "pair_id", "source"}
    assert kwargs["config_file"] == str(path.resolve()) and kwargs["pair_id"] == "cupid_user"
    assert kwargs["destination"] == 0


def test_the_watcher_changes_when_the_watched_source_does(write_config: WriteConfig) -> None:
    """Airflow replaces a watcher only when its trigger's arguments change: an edit of what is
    watched must change them (a password edit is picked up by the running poll)."""

    def source_kwarg(config: dict[str, Any]) -> str:
        write_config("user.json", config)
        timetable = load_bag().dags["cupid_user"].timetable
        kwargs = timetable.asset_condition.watchers[0].trigger.serialize()[1]
        assert "s3cret" not in json.dumps(kwargs) and "other-pw" not in json.dumps(kwargs)
        return str(kwargs["source"])

    base = source_kwarg(sample_config())
    new_password = sample_config()
    new_password["src"]["dsn"] = new_password["src"]["dsn"].replace("s3cret-pw", "other-pw")
    assert source_kwarg(new_password) == base
    for change in ({"table": "user_v2"}, {"insertIntervalMillisecond": 500}, {"updateColumn": "mtime"}):
        config = sample_config()
        config["src"].update(change)
        assert source_kwarg(config) != base, change


def test_safety_schedules_spread_over_six_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pair's next safety run, as Airflow computes it: 6 to 7 hours after its last one, and
    200 pairs never start theirs together."""
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables import interval
    from airflow.timetables.base import TimeRestriction

    from cupid_airflow.dag_factory import START_DATE

    monkeypatch.setattr(interval, "utcnow", lambda: pendulum.datetime(2026, 11, 28, 12, 34, 56, tz="UTC"))
    restriction = TimeRestriction(earliest=pendulum.instance(START_DATE), latest=None, catchup=False)
    minutes = set()
    for i in range(200):
        timetable = coerce_to_core_timetable(safety_schedule(f"cupid_t{i}"))
        first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
        assert first is not None and first.run_after <= interval.utcnow()  # a new pair's first pass: at once
        second = timetable.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=restriction)
        assert second is not None and second.data_interval.start == first.data_interval.end  # contiguous
        assert timedelta(hours=6) <= second.run_after - first.run_after < timedelta(hours=7)
        minutes.add(second.run_after.replace(second=0))
    assert len(minutes) > 140  # as spread as 200 random minutes of 6.5 hours (about 155 distinct)


@pytest.mark.parametrize("schedule", ["@once", "@continuous"])
def test_once_and_continuous_do_not_watch(write_config: WriteConfig, schedule: str) -> None:
    write_config("user.json", sample_config(schedule=schedule))
    assert not isinstance(load_bag().dags["cupid_user"].timetable, AssetOrTimeSchedule)


def test_long_cupid_intervals_set_the_schedule(write_config: WriteConfig) -> None:
    config = sample_config(watch=False)
    config["src"].update(insertIntervalMillisecond=600_000, updateIntervalMillisecond=300_000)
    write_config("user.json", config)
    assert load_bag().dags["cupid_user"].timetable == DeltaDataIntervalTimetable(timedelta(seconds=300))


def test_a_new_config_starts_unpaused_unless_it_asks(write_config: WriteConfig) -> None:
    write_config("user.json", sample_config())
    write_config("held.json", sample_config(pausedAtCreation=True))
    dags = load_bag().dags
    assert dags["cupid_user"].is_paused_upon_creation is False
    assert dags["cupid_held"].is_paused_upon_creation is True


def test_a_pool_caps_the_database_tasks_only(write_config: WriteConfig) -> None:
    write_config("user.json", sample_config(pool="mysql_primary"))
    write_config("plain.json", sample_config())
    dags = load_bag().dags
    pools = {t.task_id: t.pool for t in dags["cupid_user"].tasks}
    assert pools == {
        "scan": "mysql_primary",
        "compare": "mysql_primary",
        "callback": "default_pool",
    }
    assert {t.pool for t in dags["cupid_plain"].tasks} == {"default_pool"}


def test_queues_route_the_database_tasks_and_the_callbacks(write_config: WriteConfig) -> None:
    queues = {"queue": "near-mysql", "callbackQueue": "egress", "reconcile": {"schedule": None}}
    write_config("user.json", sample_config(**queues))
    write_config("half.json", sample_config(callbackQueue="egress", reconcile={"schedule": None}))
    write_config("plain.json", sample_config())
    dags = load_bag().dags
    routed = {t.task_id: t.queue for t in [*dags["cupid_user"].tasks, *dags["cupid_user_reconcile"].tasks]}
    assert routed == {
        "scan": "near-mysql",
        "compare": "near-mysql",
        "plan": "near-mysql",
        "reconcile": "near-mysql",
        "callback": "egress",
    }
    default = dags["cupid_plain"].tasks[0].queue  # [operators] default_queue
    assert {t.queue for t in dags["cupid_plain"].tasks} == {default}
    half = {t.task_id: t.queue for t in [*dags["cupid_half"].tasks, *dags["cupid_half_reconcile"].tasks]}
    assert half == {"scan": default, "compare": default, "plan": default, "reconcile": default, "callback": "egress"}


def test_docs_show_the_config_with_secrets_masked(write_config: WriteConfig) -> None:
    config = sample_config()
    config["src"]["pushbearSendKey"] = "SCT-sendkey-777"
    write_config("user.json", config)

    dag = load_bag().dags["cupid_user"]
    serialized = json.dumps(DagSerialization.to_dict(dag))

    assert "`number` → `number`, `name` → `name`" in (dag.doc_md or "")
    assert "cupid:***@tcp(127.0.0.1:3306)/app?charset=utf8" in (dag.doc_md or "")
    for secret in ("s3cret-pw", "other-pw", "SCT-sendkey-777"):
        assert secret not in (dag.doc_md or "")
        assert secret not in serialized  # what the dag-processor stores in the metadata database


def test_bad_config_gets_a_placeholder_and_never_hides_the_others(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    write_config("good.json", sample_config())
    write_config("broken.json", sample_config(workerNumbr=3))
    write_config("syntax.json", '{"src": {,}')

    with caplog.at_level(logging.ERROR, logger="cupid_airflow.dag_factory"):
        bag = load_bag()

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["cupid_broken", "cupid_good", "cupid_syntax"]
    assert set(bag.dags["cupid_good"].task_dict) == {"scan", "compare", "callback"}
    broken = bag.dags["cupid_broken"]
    assert CONFIG_ERROR_TAG in broken.tags
    assert list(broken.task_dict) == ["config_error"]
    assert broken.timetable == NullTimetable()
    assert "unknown key 'workerNumbr'; did you mean 'workerNumber'?" in (broken.description or "")
    assert "unknown key 'workerNumbr'; did you mean 'workerNumber'?" in (broken.doc_md or "")
    assert "line 1 column 10: invalid JSON" in (bag.dags["cupid_syntax"].doc_md or "")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "broken.json" in logged and "did you mean 'workerNumber'" in logged


def test_dag_id_clash_between_files(write_config: WriteConfig) -> None:
    write_config("a.json", sample_config())
    clash = sample_config()
    clash["des"][0]["dagId"] = "cupid_a"
    write_config("b.json", clash)

    bag = load_bag()

    assert sorted(bag.dag_ids) == ["cupid_a", "cupid_b"]
    assert set(bag.dags["cupid_a"].task_dict) == {"scan", "compare", "callback"}
    assert "dag id 'cupid_a' is already used by" in (bag.dags["cupid_b"].doc_md or "")


def test_placeholder_never_takes_a_good_dags_id(write_config: WriteConfig) -> None:
    good = sample_config()
    good["des"][0]["dagId"] = "cupid_zz"
    write_config("aa.json", good)
    write_config("zz.json", "not json")

    bag = load_bag()

    assert set(bag.dags["cupid_zz"].task_dict) == {"scan", "compare", "callback"}
    assert CONFIG_ERROR_TAG in bag.dags["cupid_config_error_zz"].tags


def test_default_configs_folder_is_beside_the_dag_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUPID_CONFIG_DIR", raising=False)
    bag = load_bag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["cupid_orders_1", "cupid_orders_cache", "cupid_user"]


def test_missing_configs_folder_builds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUPID_CONFIG_DIR", str(tmp_path / "absent"))
    bag = load_bag()
    assert bag.import_errors == {} and bag.dag_ids == []


def test_reconcile_dags_per_destination(write_config: WriteConfig) -> None:
    config = two_destinations()
    config["reconcile"] = {"schedule": "@weekly"}
    config["des"][1]["reconcile"] = {"schedule": 3600, "reportOnly": True}
    write_config("orders.json", config)
    write_config("user.json", sample_config())
    write_config("manual.json", sample_config(reconcile={"schedule": None}))
    dags = load_bag().dags
    assert "cupid_user_reconcile" not in dags  # no reconcile object: no reconcile DAG
    assert dags["cupid_manual_reconcile"].timetable == NullTimetable()  # triggered only
    first, second = dags["cupid_orders_1_reconcile"], dags["cupid_orders_2_reconcile"]
    assert first.timetable == CronDataIntervalTimetable("0 0 * * 0", timezone="UTC")
    assert second.timetable == DeltaDataIntervalTimetable(timedelta(seconds=3600))
    assert set(first.task_dict) == {"plan", "reconcile", "callback"}
    assert set(second.task_dict) == {"plan", "reconcile"}  # reportOnly: a report, no callbacks
    assert "cupid-reconcile" in first.tags and first.max_active_runs == 1


def test_a_dag_id_may_not_take_another_files_reconcile_dag(write_config: WriteConfig) -> None:
    """Pair and reconcile DAG ids share one namespace: the later file is the broken one."""
    taker = sample_config()
    taker["des"][0]["dagId"] = "cupid_user_reconcile"
    write_config("a.json", taker)
    write_config("user.json", sample_config(reconcile={}))
    reconciled = sample_config(reconcile={})
    write_config("b.json", reconciled)  # builds cupid_b and cupid_b_reconcile
    late = sample_config()
    late["des"][0]["dagId"] = "cupid_b_reconcile"
    write_config("c.json", late)

    bag = load_bag()

    assert set(bag.dags["cupid_user_reconcile"].task_dict) == {"scan", "compare", "callback"}
    user = bag.dags["cupid_user"]
    assert CONFIG_ERROR_TAG in user.tags
    assert "reconcile dag id 'cupid_user_reconcile' is already used by" in (user.doc_md or "")
    assert set(bag.dags["cupid_b_reconcile"].task_dict) == {"plan", "reconcile", "callback"}
    assert "dag id 'cupid_b_reconcile' is already used by" in (bag.dags["cupid_c"].doc_md or "")


def test_reconcile_tasks_report_under_the_scan_dags_pair_id(tmp_path: Path) -> None:
    """Event ids include the pair id: a reconcile task built anywhere must use the scan DAG's."""
    from airflow.sdk import DAG

    from cupid_airflow.operators.reconcile import ReconcileOperator

    path = tmp_path / "user.json"
    path.write_text(json.dumps(sample_config(reconcile={})))
    with DAG("cupid_user_reconcile", schedule=None):
        task = ReconcileOperator(task_id="reconcile", config_file=str(path), segment={"lower": None, "upper": None})
    assert task.pair.pair_id == "cupid_user"


def test_a_config_that_cannot_be_read_at_run_time_stays_retryable(tmp_path: Path) -> None:
    """The DAG parsed, so the file was valid; while a deploy rewrites it a try may not read it. That
    must cost a retry, not fail a callback task (cupid's failure queue) for good."""
    from airflow.sdk.exceptions import AirflowFailException

    from cupid_airflow.config import ConfigError
    from cupid_airflow.operators.callback import CallbackOperator

    event = {"type": 1, "srcColumn": {"id": "1"}, "eventId": "e1"}
    task = CallbackOperator(task_id="callback", config_file=str(tmp_path / "being-rewritten.json"), events=[event])
    with pytest.raises(ConfigError) as error:
        task.execute({})  # type: ignore[arg-type]
    assert not isinstance(error.value, AirflowFailException)


def test_broken_configs_show_no_secret_in_logs_descriptions_or_docs(
    write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """What the dag-processor logs and stores (``airflow dags list``, the UI) for a broken config
    names the key and what is wrong, never a piece of a password, send key or token."""
    from tests.test_config import LEAKY_CONFIGS, pieces

    for case, (_, _, config) in LEAKY_CONFIGS.items():
        write_config(f"{case.replace('-', '_')}.json", config)
    with caplog.at_level(logging.DEBUG):
        bag = load_bag()

    assert bag.import_errors == {}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for case, (path, secret, _) in LEAKY_CONFIGS.items():
        dag = bag.dags[f"cupid_{case.replace('-', '_')}"]
        assert CONFIG_ERROR_TAG in dag.tags
        assert f"{path}: " in (dag.doc_md or "")
        shown = "\n".join([logged, dag.description or "", json.dumps(DagSerialization.to_dict(dag))])
        assert not [piece for piece in pieces(secret) if piece in shown], case


def many_destinations(n: int) -> dict[str, Any]:
    config = sample_config()
    config["des"] = [{**config["des"][0], "table": f"user_{i}"} for i in range(n)]
    return config


def test_a_deeply_nested_file_is_one_broken_config(write_config: WriteConfig) -> None:
    """100,000 nested arrays used to raise RecursionError out of the DAG file: every DAG was gone."""
    write_config("good.json", sample_config())
    write_config("deep.json", '{"src": ' + "[" * 100_000 + "]" * 100_000 + "}")
    write_config("nested.json", sample_config(extra=json.loads("[" * 40 + "]" * 40)))

    bag = load_bag()

    assert bag.import_errors == {}
    assert set(bag.dags["cupid_good"].task_dict) == {"scan", "compare", "callback"}
    assert "nested too deeply" in (bag.dags["cupid_deep"].description or "")
    assert "nested more than 16 levels deep" in (bag.dags["cupid_nested"].description or "")


def test_dag_ids_over_airflows_limit_break_only_their_file(write_config: WriteConfig) -> None:
    from airflow.models.base import ID_LEN
    from airflow.sdk.definitions.dag import TAG_MAX_LEN

    from cupid_airflow import names

    assert (names.MAX_DAG_ID_LENGTH, names.TAG_MAX_LEN) == (ID_LEN, TAG_MAX_LEN)  # Airflow's, spelled out
    long_stem = "f" * 243  # a 248-character file name: cupid_<stem>_1 has 251 characters
    write_config(f"{long_stem}.json", two_destinations())
    named = sample_config(reconcile={})
    named["des"][0]["dagId"] = "d" * 245  # fits, but its reconcile DAG's id has 255
    write_config("named.json", named)
    write_config(f"{'g' * 250}.json", "not json")  # the longest file name: cupid_<stem> has 256
    write_config("good.json", sample_config())

    bag = load_bag()

    assert bag.import_errors == {}
    assert set(bag.dags["cupid_good"].task_dict) == {"scan", "compare", "callback"}
    assert all(len(dag_id) <= ID_LEN for dag_id in bag.dag_ids)
    long_file = bag.dags[f"cupid_{long_stem}"]
    assert CONFIG_ERROR_TAG in long_file.tags
    assert "the file name makes the dag id" in (long_file.doc_md or "")
    assert "of 251 characters; Airflow allows at most 250" in (long_file.doc_md or "")
    named_dag = bag.dags["cupid_named"]
    assert "des[0].dagId: makes the reconcile dag id" in (named_dag.doc_md or "")
    (longest,) = [d for d in bag.dag_ids if d.startswith("cupid_ggg")]
    assert len(longest) == ID_LEN and CONFIG_ERROR_TAG in bag.dags[longest].tags


def test_tags_and_docs_name_databases_and_servers_never_credentials(write_config: WriteConfig) -> None:
    config = sample_config()
    config["des"][0] = {**config["des"][0], "dsn": None, "connId": "replica_db"}
    write_config("user.json", config)
    dag = load_bag().dags["cupid_user"]
    assert {"src:app.user", "des:replica_db:user"} <= set(dag.tags)
    heading = dag.doc_md.splitlines()[0]
    assert heading == "### cupid: `app.user` → `replica_db:user`"
    assert "on `127.0.0.1:3306` with `replica_db:user` on connection `replica_db`" in dag.doc_md
    assert "s3cret-pw" not in dag.doc_md and "s3cret-pw" not in " ".join(dag.tags)


def test_long_table_names_fit_airflows_tag_limit(write_config: WriteConfig) -> None:
    config = sample_config()
    config["des"][0]["table"] = f"{'s' * 64}.{'t' * 64}"
    write_config("user.json", config)
    bag = load_bag()
    assert bag.import_errors == {}
    assert "des:" + "s" * 64 + "." + "t" * 31 in bag.dags["cupid_user"].tags


def test_durations_past_what_airflow_can_hold_are_config_errors(write_config: WriteConfig) -> None:
    for name, key in (("sla", "slaSeconds"), ("retry", "failureJobRetrySecond"), ("schedule", "schedule")):
        write_config(f"huge_{name}.json", sample_config(**{key: 10**20}))  # no timedelta holds it
    write_config("good.json", sample_config())
    bag = load_bag()
    assert bag.import_errors == {}
    assert set(bag.dags["cupid_good"].task_dict) == {"scan", "compare", "callback"}
    for name, key in (("sla", "slaSeconds"), ("retry", "failureJobRetrySecond"), ("schedule", "schedule")):
        assert f"{key}:" in (bag.dags[f"cupid_huge_{name}"].description or ""), name


def test_a_file_whose_dags_airflow_refuses_half_way_leaves_only_its_placeholder(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow refuses a DAG inside its ``with`` block (here: the reconcile task, after the pair DAG
    was built): the file's DAGs must not be registered anyway, and its placeholder is what loads."""
    from cupid_airflow.operators.reconcile import ReconcileOperator

    partial = ReconcileOperator.partial

    def refuse_for_one_file(*args: Any, **kwargs: Any) -> Any:
        if "refused.json" in str(kwargs.get("config_file")):
            raise OverflowError("date value out of range")
        return partial(*args, **kwargs)

    monkeypatch.setattr(ReconcileOperator, "partial", refuse_for_one_file)
    write_config("refused.json", sample_config(reconcile={"schedule": "@daily"}))
    write_config("good.json", sample_config())
    bag = load_bag()
    assert bag.import_errors == {}
    assert set(bag.dags["cupid_good"].task_dict) == {"scan", "compare", "callback"}
    refused = bag.dags["cupid_refused"]
    assert "Airflow refused its DAGs: OverflowError" in (refused.description or "")
    assert "cupid_refused_reconcile" not in bag.dags  # half-built: a plan task and no reconcile


def test_a_file_over_the_size_limit_is_refused_unread(write_config: WriteConfig, configs_dir: Path) -> None:
    from cupid_airflow.config import MAX_CONFIG_BYTES

    with (configs_dir / "huge.json").open("wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB that reading whole would cost seconds and memory
    padded = json.dumps(sample_config())
    write_config("padded.json", padded + " " * (MAX_CONFIG_BYTES - len(padded) + 1))
    write_config("good.json", sample_config())

    bag = load_bag()

    assert bag.import_errors == {}
    assert "cupid_good" in bag.dags
    for name in ("huge", "padded"):
        assert "the file is larger than 1,048,576 bytes, the limit for a cupid config" in (
            bag.dags[f"cupid_{name}"].description or ""
        )


def test_docs_show_only_their_own_pair_and_thousands_of_destinations_load(write_config: WriteConfig) -> None:
    """Each DAG's docs embedded the whole config: 2,000 destinations cost quadratic time and memory
    and the DAG file failed to load. Now a doc has the same size whatever the file's size."""
    from cupid_airflow.config import MAX_DESTINATIONS

    write_config("one.json", many_destinations(1))
    for n in range(4):
        write_config(f"many{n}.json", many_destinations(MAX_DESTINATIONS))
    write_config("too_many.json", many_destinations(MAX_DESTINATIONS + 1))

    bag = load_bag()

    assert bag.import_errors == {}
    assert len([d for d in bag.dag_ids if d.startswith("cupid_many")]) == 4 * MAX_DESTINATIONS
    one = bag.dags["cupid_one"].doc_md or ""
    last = bag.dags[f"cupid_many3_{MAX_DESTINATIONS}"].doc_md or ""
    assert f'"table": "user_{MAX_DESTINATIONS - 1}"' in last and '"table": "user_0"' not in last
    assert len(last) < len(one) + 200  # longer paths and numbers only, not 500 destinations
    assert f"des: {MAX_DESTINATIONS + 1} destinations; at most {MAX_DESTINATIONS} per file" in (
        bag.dags["cupid_too_many"].description or ""
    )


def test_a_task_process_builds_only_the_file_of_its_dag(
    write_config: WriteConfig, configs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's parsing context names the DAG a task runs: only its file is loaded and built, so
    task starts do not grow with the folder. A dagId another file might claim loads them all."""
    from cupid_airflow.dag_factory import build_dags

    two = sample_config(reconcile={"schedule": "@daily"})
    two["des"] = two["des"] * 2
    write_config("orders.json", two)
    write_config("users.json", sample_config())
    write_config("broken.json", "{ not json")
    loaded: list[str] = []
    from cupid_airflow import catalog

    real = catalog.load_config
    monkeypatch.setattr(catalog, "load_config", lambda path: loaded.append(Path(path).name) or real(path))

    for dag_id, built in (
        ("cupid_users", {"cupid_users"}),
        (
            "cupid_orders_2",
            {"cupid_orders_1", "cupid_orders_2", "cupid_orders_1_reconcile", "cupid_orders_2_reconcile"},
        ),
        (
            "cupid_orders_2_reconcile",
            {"cupid_orders_1", "cupid_orders_2", "cupid_orders_1_reconcile", "cupid_orders_2_reconcile"},
        ),
        ("cupid_broken", {"cupid_broken"}),
    ):
        loaded.clear()
        monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)
        assert set(build_dags(config_dir=configs_dir)) == built, dag_id
        assert len(loaded) == 1, (dag_id, loaded)

    write_config("custom.json", sample_config(des=[{**sample_config()["des"][0], "dagId": "cupid_users"}]))
    loaded.clear()
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "cupid_users")
    dags = build_dags(config_dir=configs_dir)  # custom.json names cupid_users: the whole folder decides
    assert len(loaded) == 4 and "cupid_users" in dags
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID")
    loaded.clear()
    build_dags(config_dir=configs_dir)
    assert len(loaded) == 4  # the dag-processor: every file
