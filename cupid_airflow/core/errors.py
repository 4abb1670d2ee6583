"""Which failures no retry can fix.

A missing column, a key type cupid cannot carry, an update column in a format that does not sort:
running the task again gives the same error, so spending retries (hours, with callback backoff)
only delays the alert. Operators turn these into Airflow's fail-for-good exception; everything
else (a dropped connection, a lock wait, a server restart) stays retryable. Which driver errors
are of this kind is each database's to say (:func:`cupid_airflow.dialects.permanent_reason`).
"""

from __future__ import annotations

__all__ = ["PermanentError", "TimeColumnError", "UnsupportedValueError", "error_notes"]


class PermanentError(Exception):
    """The task would fail the same way on every try: fix the config or the tables first."""


class UnsupportedValueError(PermanentError, TypeError):
    """A key or boundary value of a type cupid cannot carry between tasks (XCom, state stores)."""


class TimeColumnError(PermanentError, ValueError):
    """``src.updateColumn`` stores time in a way cupid cannot range-scan or compare."""


def error_notes(error: BaseException) -> str:
    """The notes added to an error on its way up (which table, which server), in one line."""
    return "; ".join(getattr(error, "__notes__", []))
