"""Run notes: when a cupid run ends, its note in the UI says what it found and delivered.

An Airflow listener (the ``cupid`` plugin's): the scheduler calls it as it marks a run done, with
the run in its session, so the note is written in the scheduler's own transaction. A task cannot
set its run's note (the Execution API has no call for it). The listener reads only the run's
``cupid_tally`` XComs (one indexed query), so a run of any other DAG costs one empty lookup, and
writes notes on the DAG factory's DAGs only. A note a user wrote or edited is never replaced; one
cupid wrote is, when the run is cleared and ends again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
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

        state = str(dag_run.state)
        session: Any = object_session(dag_run)
        if session is not None:  # the scheduler's: its transaction holds the run's row
            return _write(session, dag_run.id, dag_run.dag_id, state)
        # a run no session holds (dag.test()): a session of our own, not the thread's scoped one
        from airflow.utils.session import create_session

        with create_session(scoped=False) as own:
            return _write(own, dag_run.id, dag_run.dag_id, state)
    except Exception:
        log.warning("cupid: could not write the note of run %s", getattr(dag_run, "run_id", "?"), exc_info=True)
        return None


def _write(session: Any, run_pk: int, dag_id: str, state: str) -> str | None:
    """The note, written in a SQL savepoint of the caller's transaction with Core statements.

    Not through the ORM: a failed ORM flush poisons the whole session, and the scheduler's
    session forbids any commit but its own (``prohibit_commit``: an ORM savepoint's release
    counts as one). A plain ``SAVEPOINT`` confines an error (a database hiccup) to the note;
    ``no_autoflush`` keeps the scheduler's pending changes out of it.

    Whose note it is is decided by who wrote it: a note with a user (the UI's note editor and the
    REST API record one) is the user's, also when it still starts with cupid's words, as an
    edit of cupid's note in the editor does. cupid writes only over its own note, and only if it
    is still the text it read (one conditional UPDATE), so a note saved in between is kept."""
    from airflow.models.dag import DagTag
    from airflow.models.dagrun import DagRunNote
    from sqlalchemy import insert, select, text, update
    from sqlalchemy.exc import IntegrityError

    from cupid_airflow.core.drift import NOTE_PREFIX, RunFigures, run_note
    from cupid_airflow.names import is_factory_dag
    from cupid_airflow.plugins.drift_data import run_records

    notes = DagRunNote.__table__
    with session.no_autoflush:
        session.execute(text("SAVEPOINT cupid_note"))
        try:
            note = None
            records = run_records(session, [run_pk], [dag_id]).get(run_pk, [])
            tags = set(session.scalars(select(DagTag.name).where(DagTag.dag_id == dag_id))) if records else set()
            # the DAG factory's DAGs only: a task of any DAG can push an XCom of the tally's key
            if is_factory_dag(tags):
                current = session.execute(
                    select(notes.c.content, notes.c.user_id).where(notes.c.dag_run_id == run_pk)
                ).first()
                figures = RunFigures.of_records(records)
                reconcile = any(isinstance(r, dict) and r.get("task") == "reconcile" for r in records)
                note = run_note(figures, state, reconcile=reconcile)
                now = datetime.now(UTC)
                values = {"content": note, "user_id": None, "updated_at": now}  # cupid's, credited to no user
                if current is None:
                    session.execute(insert(notes).values(dag_run_id=run_pk, created_at=now, **values))
                elif current.user_id is None and (not current.content or current.content.startswith(NOTE_PREFIX)):
                    unchanged = (notes.c.content == current.content) if current.content else notes.c.content.is_(None)
                    written = session.execute(
                        update(notes)
                        .where(notes.c.dag_run_id == run_pk, notes.c.user_id.is_(None), unchanged)
                        .values(**values)
                    )
                    note = note if written.rowcount == 1 else None  # saved by someone since it was read
                else:
                    note = None  # the user's
            session.execute(text("RELEASE SAVEPOINT cupid_note"))
        except IntegrityError:  # a note was inserted since it was read: it is not cupid's to replace
            session.execute(text("ROLLBACK TO SAVEPOINT cupid_note"))
            return None
        except Exception:
            session.execute(text("ROLLBACK TO SAVEPOINT cupid_note"))
            raise
    return note
