"""Run notes: when a cupid run ends, its note in the UI says what it found and delivered.

An Airflow listener (the ``cupid`` plugin's): the scheduler calls it as it marks a run done, with
the run in its session, so the note is written in the scheduler's own transaction. A task cannot
set its run's note (the Execution API has no call for it). The listener reads only the run's
``cupid_tally`` XComs (one indexed query), so a run of any other DAG costs one empty lookup. A
note a user wrote is never replaced; one cupid wrote (it starts with ``cupid:``) is, when the run
is cleared and ends again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun

__all__ = ["on_dag_run_failed", "on_dag_run_success", "write_run_note"]

log = logging.getLogger(__name__)


@hookimpl
def on_dag_run_success(dag_run: DagRun, msg: str) -> None:
    write_run_note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: DagRun, msg: str) -> None:
    write_run_note(dag_run)


def write_run_note(dag_run: DagRun) -> str | None:
    """Set the run's note from its tallies; the note written, or None (not a cupid run, or the
    note is the user's). Never raises: a note is not worth failing the scheduler's loop for."""
    try:
        from sqlalchemy.orm import object_session

        session: Any = object_session(dag_run)
        if session is not None:  # the scheduler's: its transaction holds the run's row
            # in a savepoint, flushed here: a database error (or a note the user saved at the
            # same moment) rolls back the note alone, never the scheduler's transaction
            with session.begin_nested():
                note = _write(session, dag_run)
                session.flush()
            return note
        # a run no session holds: write it in a session of our own (not the thread's scoped
        # one, which may be a caller's)
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session(scoped=False) as own:
            attached = own.get(DagRun, dag_run.id)
            return None if attached is None else _write(own, attached, str(dag_run.state))
    except Exception:
        log.warning("cupid: could not write the note of run %s", getattr(dag_run, "run_id", "?"), exc_info=True)
        return None


def _write(session: Any, dag_run: DagRun, state: str | None = None) -> str | None:
    from cupid_airflow.core.drift import NOTE_PREFIX, RunFigures, run_note
    from cupid_airflow.plugins.drift_data import run_tallies

    tallies = run_tallies(session, [dag_run.id]).get(dag_run.id, [])
    if not tallies:
        return None
    current = dag_run.note
    if current and not str(current).startswith(NOTE_PREFIX):
        return None
    reconcile = any(t.get("task") == "reconcile" for t in tallies)
    note = run_note(RunFigures.of(tallies), state or str(dag_run.state), reconcile=reconcile)
    dag_run.note = note
    if dag_run.dag_run_note is not None:  # replacing its own note: the UI must not credit the user
        dag_run.dag_run_note.user_id = None
    return note
