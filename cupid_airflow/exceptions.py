"""The exceptions cupid's tasks end with, and what they tell the alert."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException

__all__ = ["CallbackDeliveryError", "CupidFailure", "ReceiverGoneError", "RepairError"]


class CupidFailure(AirflowFailException):
    """A failure no retry can fix (a missing column, an unsupported key type, a bad time format,
    an invalid config): the task fails at once and the alert goes out."""


class CallbackDeliveryError(AirflowException):
    """Some events were not accepted; the task's retries send them again.

    :param undelivered: how many events are still waiting, for the alert.
    """

    def __init__(self, message: str, *, undelivered: int) -> None:
        super().__init__(message)
        self.undelivered = undelivered


class ReceiverGoneError(AirflowFailException):
    """The receiver answered 410 Gone: retrying cannot help, so the task fails without retries."""

    def __init__(self, message: str, *, undelivered: int) -> None:
        super().__init__(message)
        self.undelivered = undelivered


class RepairError(AirflowException):
    """The destination refused some repairs (a constraint, a value its column cannot hold): the
    task's retries apply them again; what was applied is kept and not repeated."""
