"""A folder of cupid configs -> one Airflow DAG per (config file, destination).

Call :func:`build_dags` from a DAG file (see ``dags/cupid_dags.py``). Parsing reads only the
config files: no database or network I/O, so hundreds of configs parse in well under a second.
A broken config becomes a placeholder DAG that shows its error in the UI and fails if run; the
other configs' DAGs load as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronDataIntervalTimetable,
    DeltaDataIntervalTimetable,
    get_parsing_context,
)
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from cupid_airflow.catalog import ConfigEntry, config_files, default_config_dir, files_for_dag, load_catalog
from cupid_airflow.config import ConfigError, CupidConfig, Destination, Problem, Source
from cupid_airflow.dsn import parse_go_dsn, qualified_table
from cupid_airflow.names import (
    CONFIG_ERROR_TAG,
    CUPID_TAG,
    RECONCILE_TAG,
    broken_description,
    config_tag,
    placeholder_dag_id,
    reconcile_dag_id,
    table_tags,
    watch_asset_identity,
    watcher_name,
)
from cupid_airflow.notifiers.pushbear import PushBearNotifier
from cupid_airflow.operators.base import MAP_INDEX_TEMPLATE
from cupid_airflow.operators.callback import CallbackOperator
from cupid_airflow.operators.compare import CompareOperator
from cupid_airflow.operators.config_error import ConfigErrorOperator
from cupid_airflow.operators.reconcile import ReconcileOperator, ReconcilePlanOperator
from cupid_airflow.operators.repair import RepairOperator
from cupid_airflow.operators.scan import ScanOperator, backlog_alias
from cupid_airflow.pair import SyncPair
from cupid_airflow.run_params import run_params
from cupid_airflow.triggers.watch import SourceWatchTrigger

__all__ = [
    "MIN_SCHEDULE_SECONDS",
    "build_dags",
    "safety_schedule",
    "schedule_for",
    "watch_asset",
]

log = logging.getLogger(__name__)

#: An Airflow run costs seconds of scheduling; cupid's 2 s polling intervals are raised to this.
MIN_SCHEDULE_SECONDS = 60
#: A watched pair's safety schedule runs every this many hours, plus up to SAFETY_SPREAD_SECONDS.
SAFETY_EVERY_HOURS = 6
SAFETY_SPREAD_SECONDS = 3600
#: cupid-go alerts when a callback has failed this many times.
ALERT_AT_TRY = 3
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
_PRESET_CRON = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}


def schedule_for(config: CupidConfig, dag_id: str = "", config_file: str = "", index: int = 0) -> Any:
    """When a pair's DAG runs: by default when its source changes (the triggerer's watcher) or
    when its safety schedule comes due, whichever is first; with ``watch: false`` on the schedule
    alone. Every timetable has data intervals, so update windows stay contiguous and backfillable.

    ``schedule``: seconds, a cron expression or preset (in UTC), ``@once`` or ``@continuous`` (these
    two do not watch). Without it: watching pairs check every 6 hours plus up to an hour of their own
    (:func:`safety_schedule`); others run at the shortest enabled cupid interval, raised to
    :data:`MIN_SCHEDULE_SECONDS`.
    """
    if config.watch and config.schedule not in ("@once", "@continuous"):
        safety = _timetable(config.schedule) if config.schedule is not None else safety_schedule(dag_id)
        return AssetOrTimeSchedule(timetable=safety, assets=watch_asset(dag_id, config_file, index, config))
    if config.schedule is not None:
        return _timetable(config.schedule)
    src = config.src
    intervals = [
        ms
        for on, ms in ((src.insert, src.insert_interval_millisecond), (src.update, src.update_interval_millisecond))
        if on
    ]
    seconds = max(MIN_SCHEDULE_SECONDS, min(intervals) // 1000)
    return DeltaDataIntervalTimetable(timedelta(seconds=seconds))


def safety_schedule(dag_id: str) -> Any:
    """Every 6 hours plus up to an hour (seconds derived from the DAG id): a watched pair's check
    for what no event showed (a late commit below the newest id, an update stamped in the past, an
    event lost while no triggerer ran). Each run re-checks its whole interval, so every update is
    compared twice however often it runs; 6 hours keeps 200 idle pairs' safety runs at about 0.02
    cores. The latest interval runs as soon as the DAG appears: that is a new pair's first pass.

    A time delta, not a cron expression: the dag-processor rebuilds each DAG's timetable about 17
    times per parse, and a cron one costs 0.4 ms each time (the cron is validated and described in
    words again), 1.4 CPU-seconds per parse for 200 pairs, about a quarter of their parse; a delta
    costs nothing. Intervals of one delta all end on a grid counted from 1970, so each pair gets a
    delta of its own (6 hours plus 0 to 3599 s): their runs fall at unrelated times, as spread as a
    time of day hashed from the id would be, though not at a fixed time of day (a pair's runs move
    later by its extra seconds every period)."""
    digest = int(hashlib.sha256(dag_id.encode()).hexdigest()[:8], 16)
    return DeltaDataIntervalTimetable(timedelta(hours=SAFETY_EVERY_HOURS, seconds=digest % SAFETY_SPREAD_SECONDS))


def watch_asset(dag_id: str, config_file: str, index: int, config: CupidConfig) -> Asset:
    """The pair's own asset, watched by a :class:`SourceWatchTrigger`: its events start the DAG
    and its state store keeps the watcher's marks. One asset per pair (not per source table), so
    each pair keeps its own marks; pairs of one source still share a single poll."""
    source = SyncPair(config, index, dag_id).watch_version()
    trigger = SourceWatchTrigger(config_file=config_file, destination=index, pair_id=dag_id, source=source)
    name, uri = watch_asset_identity(dag_id)
    return Asset(
        name=name,
        uri=uri,
        group=CUPID_TAG,
        watchers=[AssetWatcher(name=watcher_name(dag_id), trigger=trigger)],
    )


def _timetable(schedule: str | int) -> Any:
    """Seconds, a cron expression or preset (in UTC), ``@once`` or ``@continuous``."""
    if isinstance(schedule, int):
        return DeltaDataIntervalTimetable(timedelta(seconds=schedule))
    if schedule in ("@once", "@continuous"):
        return schedule
    return CronDataIntervalTimetable(_PRESET_CRON.get(schedule, schedule), timezone="UTC")


def _doc(entry: ConfigEntry, config: CupidConfig, index: int) -> str:
    des = config.des[index]
    columns = ", ".join(f"`{s}` → `{d}`" for s, d in des.columns.items())
    redacted = config.redacted(index)  # this pair only: docs of n DAGs must not cost n * n
    watching = " and ".join(w for w, on in (("new ids", config.src.insert), ("updated rows", config.src.update)) if on)
    (src_table, src_server), (des_table, des_server) = _place(config.src), _place(des)
    return "\n".join(
        [
            f"### cupid: `{src_table}` → `{des_table}`",
            "",
            f"Compares {watching} of `{src_table}` on {src_server} with "
            f"`{des_table}` on {des_server} (matched on `{config.src.by_column}` = `{des.by_column}`) "
            "and calls back for every missing or different row.",
            "",
            f"* config file: `{entry.path}` (destination {index + 1} of {len(config.des)})",
            f"* columns compared: {columns}",
            f"* callback: `{redacted['des'][0].get('callbackNotification', {}).get('url') or ''}`"
            + (f" via connection `{des.http_conn_id}`" if des.http_conn_id else ""),
            "",
            "Config of this pair (secrets masked):",
            "",
            "```json",
            json.dumps(redacted, indent=2, ensure_ascii=False),
            "```",
        ]
    )


def _place(endpoint: Source | Destination) -> tuple[str, str]:
    """The table as ``<database>.<table>`` (a ``schema.table`` stays as it is) and its server
    (host and port, or the socket), from the DSN without its credentials; for an Airflow
    connection ``<conn_id>:<table>`` and the connection's id (its database is not known without
    looking it up)."""
    if endpoint.dsn is None:
        return f"{endpoint.conn_id}:{endpoint.table}", f"connection `{endpoint.conn_id}`"
    dsn = parse_go_dsn(endpoint.dsn)
    server = f"`{dsn.unix_socket}`" if dsn.unix_socket else f"`{dsn.host}:{dsn.port}`"
    return qualified_table(dsn.database, endpoint.table), server


def _tags(entry: ConfigEntry, *kinds: str, config: CupidConfig | None = None, index: int = 0) -> list[str]:
    """``cupid``, the DAG's kinds, ``config:<file name>`` and, for a pair, its tables
    (``src:<database>.<table>``, ``des:...``): filters in the DAG list, and the cupid view's keys."""
    tags = [CUPID_TAG, *kinds, config_tag(entry.path.name)]
    if config is not None:
        tags += table_tags(_place(config.src)[0], _place(config.des[index])[0])
    return tags


def _deadline(config_file: str, config: CupidConfig) -> DeadlineAlert | None:
    """Airflow 3's replacement for SLA misses: alert when a run is not done ``slaSeconds`` after it was queued."""
    if config.sla_seconds is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=config.sla_seconds),
        callback=AsyncCallback(PushBearNotifier, kwargs={"config_file": config_file}),
    )


def _build_pair(entry: ConfigEntry, config: CupidConfig, index: int, dag_id: str) -> DAG:
    des = config.des[index]
    config_file = str(entry.path.resolve())
    schedule = schedule_for(config, dag_id, config_file, index)
    with DAG(
        auto_register=False,  # only what build_dags returns: a file that fails half-built registers nothing
        dag_id=dag_id,
        description=f"cupid: {config.src.table} -> {des.table}",
        schedule=schedule,
        start_date=START_DATE,
        catchup=config.catchup,
        is_paused_upon_creation=config.paused_at_creation,
        deadline=_deadline(config_file, config),
        max_active_runs=1,  # a run's scans start from where the last one ended, or take over its ranges
        params=run_params(),
        doc_md=_doc(entry, config, index),
        tags=_tags(entry, config=config, index=index),
    ) as dag:
        common: dict[str, Any] = {"config_file": config_file, "destination": index, **_alerting(config_file)}
        database = _database_tasks(config, common)
        retried = {**database, **_database_retries(config)}
        # One scan task for new ids and updated rows: every task in a run's path costs a process start.
        # A watched pair's scan queues the next run itself when it leaves a backlog.
        watched = isinstance(schedule, AssetOrTimeSchedule)
        outlets = [backlog_alias(dag_id)] if watched and config.src.insert else []
        # the watch asset's state store: the scan tells the watcher when to look at candidates again
        inlets = [Asset.ref(name=watch_asset_identity(dag_id)[0])] if watched and config.confirm_seconds else []
        scan = ScanOperator(task_id="scan", max_active_tis_per_dag=1, outlets=outlets, inlets=inlets, **retried)
        compare = CompareOperator.partial(task_id="compare", map_index_template=MAP_INDEX_TEMPLATE, **retried).expand(
            partition=scan.output
        )
        _callbacks(config, config_file, common, compare.output)
        _repairs(config, index, retried, compare.output, ask_approval=False)
    return dag


def _alerting(config_file: str) -> dict[str, Any]:
    """Every task's alert on failure. Given to each task, not through the DAG's ``default_args``:
    Airflow looks up the source code of each callable in ``default_args`` whenever it serializes
    the DAG (2 ms a DAG, a quarter of serializing one) only to store a flag."""
    return {"on_failure_callback": [PushBearNotifier(config_file=config_file)]}


def _database_tasks(config: CupidConfig, common: dict[str, Any]) -> dict[str, Any]:
    """Arguments of the tasks that query the databases: an Airflow pool, when the config names
    one, caps them across every DAG that names it (callbacks are not counted); a queue, when it
    names one, sends them to the workers that serve it."""
    extra = {"pool": config.pool, "queue": config.queue}
    return {**common, **{key: value for key, value in extra.items() if value}}


#: Tries of a scan or compare task: a lost connection or a restarting server costs a retry, not the
#: run; errors no retry can fix fail at the first try anyway (CupidFailure).
DATABASE_RETRIES = 2


#: Time limit of one try of a scan, compare or reconcile plan, so a try that hangs (a database that
#: stops answering mid-query, a lock never granted) fails and a retry takes over. Each of these
#: queries a bounded amount (a claim of maxRowsPerRun rows cut into at most 500 partitions, one
#: partition): minutes on a healthy server, so two hours only ever stops a stuck try. The database
#: timeouts (:data:`~cupid_airflow.hooks.table.READ_TIMEOUT_SECONDS`) bound each wait on a socket.
#: A scan that sends a small run's callbacks itself starts sends for at most
#: :data:`~cupid_airflow.callbacks.INLINE_SEND_SECONDS` and leaves the rest to ``callback``.
DATABASE_TASK_TIMEOUT = timedelta(hours=2)
#: Time limit of one reconcile try: a segment of ``segmentRows`` rows, checksummed chunk by chunk
#: (each sized to ``targetQuerySeconds``), plus ``minAgeSeconds`` for a task that waits it out in
#: place (no state store). A deferred wait does not count: Airflow 3.3 restarts the limit when the
#: task resumes. Callbacks have no limit: each request has its own timeout, and a try delivering
#: 100,000 events to a slow receiver may rightly take hours.
RECONCILE_TASK_TIMEOUT = timedelta(hours=6)


def _database_retries(config: CupidConfig) -> dict[str, Any]:
    return {
        "execution_timeout": DATABASE_TASK_TIMEOUT,
        "retries": DATABASE_RETRIES,
        "retry_delay": timedelta(seconds=config.failure_job_retry_second),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=5),
    }


def _callbacks(config: CupidConfig, config_file: str, common: dict[str, Any], events: Any) -> None:
    """The mapped ``callback`` task: cupid's failure queue is its retries."""
    CallbackOperator.partial(
        task_id="callback",
        map_index_template=MAP_INDEX_TEMPLATE,
        retries=config.callback_retries,
        retry_delay=timedelta(seconds=config.failure_job_retry_second),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(minutes=10),
        on_retry_callback=[PushBearNotifier(config_file=config_file, only_on_try=ALERT_AT_TRY)],
        **({"queue": config.callback_queue} if config.callback_queue else {}),
        **common,
    ).expand(events=events)


def _repairs(config: CupidConfig, index: int, retried: dict[str, Any], events: Any, ask_approval: bool) -> None:
    """The mapped ``repair`` task beside ``callback``, over the same events, when the destination
    has a ``repair`` object (:class:`~cupid_airflow.operators.repair.RepairOperator`). Only a
    reconcile run asks a person: a scan run waiting for an answer would hold the pair's next runs."""
    if config.des[index].repair is None:
        return
    RepairOperator.partial(
        task_id="repair", map_index_template=MAP_INDEX_TEMPLATE, ask_approval=ask_approval, **retried
    ).expand(events=events)


def _build_reconcile(entry: ConfigEntry, config: CupidConfig, index: int, dag_id: str) -> DAG | None:
    """``<dag_id>_reconcile``: the whole key range (or ``fromKey``..``toKey``), on its own schedule."""
    settings = config.reconcile_for(index)
    if settings is None:
        return None
    des = config.des[index]
    config_file = str(entry.path.resolve())
    with DAG(
        auto_register=False,  # only what build_dags returns: a file that fails half-built registers nothing
        dag_id=reconcile_dag_id(dag_id),
        description=f"cupid reconcile: {config.src.table} <-> {des.table}",
        schedule=None if settings.schedule is None else _timetable(settings.schedule),
        start_date=START_DATE,
        catchup=False,
        is_paused_upon_creation=config.paused_at_creation,
        max_active_runs=1,
        doc_md=_doc(entry, config, index).replace("### cupid:", "### cupid reconcile:", 1),
        tags=_tags(entry, RECONCILE_TAG, config=config, index=index),
    ) as dag:
        common: dict[str, Any] = {
            "config_file": config_file,
            "destination": index,
            "pair_id": dag_id,
            **_alerting(config_file),
        }
        database = _database_tasks(config, common)
        plan = ReconcilePlanOperator(task_id="plan", execution_timeout=DATABASE_TASK_TIMEOUT, **database)
        limit = RECONCILE_TASK_TIMEOUT + timedelta(seconds=settings.min_age_seconds)
        reconcile = ReconcileOperator.partial(
            task_id="reconcile", retries=3, execution_timeout=limit, map_index_template=MAP_INDEX_TEMPLATE, **database
        ).expand(segment=plan.output)
        if not settings.report_only:
            _callbacks(config, config_file, common, reconcile.output)
            _repairs(config, index, {**database, **_database_retries(config)}, reconcile.output, ask_approval=True)
    return dag


def _build_placeholder(entry: ConfigEntry, dag_id: str) -> DAG:
    assert entry.error is not None
    problems = [str(p) for p in entry.error.problems]
    with DAG(
        auto_register=False,  # only what build_dags returns: a file that fails half-built registers nothing
        dag_id=dag_id,
        description=broken_description(entry.path.name, problems[0]),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        doc_md="\n".join(
            [
                f"### cupid config `{entry.path}` is invalid",
                "",
                "This DAG stands in for the DAGs of a config that does not load. Fix the file; this "
                "placeholder goes away at the next parse and the real DAGs come back.",
                "",
                *[f"* `{p}`" for p in problems],
                "",
                f"Check every config with `python -m cupid_airflow validate {entry.path.parent}`.",
            ]
        ),
        tags=_tags(entry, CONFIG_ERROR_TAG),
    ) as dag:
        ConfigErrorOperator(task_id="config_error", errors=str(entry.error))
    return dag


def _build_entry(entry: ConfigEntry, config: CupidConfig) -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    for index, dag_id in enumerate(entry.dag_ids):
        dags[dag_id] = _build_pair(entry, config, index, dag_id)
        if (reconcile := _build_reconcile(entry, config, index, dag_id)) is not None:
            dags[reconcile.dag_id] = reconcile
    return dags


def _unbuildable(entry: ConfigEntry, config: CupidConfig, error: Exception) -> ConfigError:
    """The error of a valid config whose DAGs Airflow refused, without the config's secrets."""
    message = str(error)
    for secret in config.secrets():
        message = message.replace(secret, "***")
    return ConfigError(
        str(entry.path), [Problem("", f"Airflow refused its DAGs: {type(error).__name__}: {message}"[:500])]
    )


def build_dags(dag_file: str | Path | None = None, config_dir: str | Path | None = None) -> dict[str, DAG]:
    """Every DAG of the configs in ``config_dir`` (default: ``$CUPID_CONFIG_DIR``, else ``configs/``
    beside ``dag_file``), keyed by dag id, ready for ``globals().update(...)``.

    A file that does not load, or whose DAGs Airflow refuses, becomes one placeholder DAG; it never
    takes the other files' DAGs down with it. In a task process (Airflow's parsing context names
    its DAG) only the file that builds that DAG is loaded, so a task starts as fast with 500
    configs in the folder as with one.
    """
    folder = Path(config_dir) if config_dir is not None else default_config_dir(dag_file)
    if not folder.is_dir():
        log.error("cupid: configs folder %s does not exist; no cupid DAGs were built", folder)
        return {}
    files = config_files([folder])
    wanted = get_parsing_context().dag_id  # set in a task process: it runs one DAG
    if wanted is not None:
        files = files_for_dag(wanted, files) or files
    entries = load_catalog(files)
    dags: dict[str, DAG] = {}
    for entry in entries:
        if entry.config is not None:
            try:
                dags.update(_build_entry(entry, entry.config))
            except Exception as e:  # the DAG file's import must survive one file Airflow refuses
                entry.error, entry.config = _unbuildable(entry, entry.config, e), None
    for entry in entries:
        if entry.config is None:
            log.error("cupid: config %s is invalid; a placeholder DAG shows why:\n%s", entry.path, entry.error)
            dag_id = placeholder_dag_id(entry.stem_dag_id, dags)
            dags[dag_id] = _build_placeholder(entry, dag_id)
    return dags
