"""What cupid tasks did, as metrics through Airflow's own Stats: StatsD, Datadog or OpenTelemetry
when the deployment turns them on (``[metrics]``), nothing otherwise. Names and tags are in the
README's "Metrics"; docs/decisions.md says why they look the way they do.

Every metric goes out twice, as Airflow's own ``ti.finish`` does: a name with tags (``dag_id``,
``task``, ``type``) for backends that keep tags, and, unless ``[metrics] legacy_names_on`` is off,
a name with the DAG id in it (``cupid.dag.<dag_id>.rows``), because plain StatsD drops tags. Tags
and names carry DAG ids, task kinds and divergence types only: never a URL, DSN or table.

A metric never fails a task: any error is logged at debug level and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.configuration import conf
from airflow.sdk.observability import stats

from cupid_airflow.core.delivery import DeliveryReport
from cupid_airflow.core.tally import Tally

__all__ = ["PREFIX", "delivery", "emit", "repairs"]

log = logging.getLogger(__name__)

#: First part of every name; StatsD puts ``[metrics] statsd_prefix`` (``airflow``) before it.
PREFIX = "cupid"


def emit(dag_id: str, tally: Tally) -> None:
    """The figures of one task's :class:`~cupid_airflow.core.tally.Tally`: rows compared,
    divergences by type, the scan's backlog and update lag, the reconcile's chunks.

    Callback figures are not taken from the tally (its ``delivered`` counts earlier tries too):
    :func:`delivery` counts each delivery pass once, where it happens."""
    _safely(_tally, dag_id, tally)


def delivery(dag_id: str, task: str, report: DeliveryReport, retried: int = 0, final: bool = True) -> None:
    """One delivery pass: events delivered and not delivered, events sent again (``retried``: the
    ones an earlier try did not deliver, plus the report's re-sends after a Retry-After), and the
    report's sample of POST times. A pass that is not ``final`` (a small run's, in its scan) hands
    what it did not deliver to the callback task, whose pass counts them: not failures here."""
    _safely(_delivery, dag_id, task, report, retried, final)


def _tally(dag_id: str, tally: Tally) -> None:
    send, task = _sender(dag_id), tally.get("task", "")
    if "rows" in tally:
        send(stats.incr, "rows", tally["rows"], task=task)
    for kind, count in sorted(tally.get("found", {}).items()):
        send(stats.incr, "divergences", count, task=task, type=kind)
    if "max_id" in tally and "cursor" in tally:
        send(stats.gauge, "backlog", max(0, tally["max_id"] - tally["cursor"]))
    if "until" in tally:
        until = datetime.fromisoformat(tally["until"])
        lag = datetime.now(UTC) - (until if until.tzinfo else until.replace(tzinfo=UTC))
        send(stats.gauge, "update_lag", max(0.0, lag.total_seconds()))
    if "candidates" in tally:
        send(stats.incr, "candidates", tally["candidates"], task=task)
    if "cleared" in tally:
        send(stats.incr, "candidates.cleared", tally["cleared"], task=task)
    if "waiting" in tally:
        send(stats.gauge, "candidates.waiting", tally["waiting"])
        send(stats.gauge, "candidates.hot", tally.get("hot", 0))
    if "lag" in tally:
        send(stats.gauge, "lag", tally["lag"])
    if "checksummed" in tally:
        send(stats.incr, "reconcile.checksummed", tally["checksummed"])
    if "read" in tally:
        send(stats.incr, "reconcile.read", tally["read"])


def repairs(dag_id: str, figures: dict[str, int]) -> None:
    """Repairs by outcome (repaired, skipped, settled, moved, held, awaiting, rejected), each
    counted once: a repair task's tally counts earlier tries too, so it is not what a counter may
    add; the task sends what is new (:meth:`~cupid_airflow.core.repair_progress.RepairProgress.unsent`)."""
    _safely(_repairs, dag_id, figures)


def _repairs(dag_id: str, figures: dict[str, int]) -> None:
    send = _sender(dag_id)
    for outcome, count in sorted(figures.items()):
        if count:
            send(stats.incr, "repairs", count, outcome=outcome)


def _delivery(dag_id: str, task: str, report: DeliveryReport, retried: int, final: bool) -> None:
    send = _sender(dag_id)
    send(stats.incr, "callbacks.delivered", report.delivered, task=task)
    if final:
        send(stats.incr, "callbacks.failed", report.undelivered, task=task)
    send(stats.incr, "callbacks.retried", retried + report.resent, task=task)
    for seconds in report.latency.seconds:
        send(stats.timing, "callbacks.latency", seconds * 1000, task=task)


def _sender(dag_id: str) -> Callable[..., None]:
    """``send(method, name, value, **tags)``: ``name`` with its tags, then (with legacy names on)
    the name holding the DAG id and a divergence type, with the other tags, as Airflow's legacy
    names keep the tags their name does not hold."""
    legacy = conf.getboolean("metrics", "legacy_names_on", fallback=True)
    # Airflow's rule for a dot in a name variable: it would add a level to the name's hierarchy
    prefix = f"{PREFIX}.dag.{dag_id.replace('.', '__')}"

    def send(method: Callable[..., None], name: str, value: float, **tags: str) -> None:
        method(f"{PREFIX}.{name}", value, tags={"dag_id": dag_id, **tags})
        if legacy:
            kind = tags.pop("type", None)
            method(f"{prefix}.{name}" + (f".{kind}" if kind else ""), value, tags=tags)

    return send


def _safely(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # a metrics backend, a config value: never the task's failure
        log.debug("Could not send cupid metrics", exc_info=True)
