"""POSTs compare's events to the destination's callback URL."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from cupid_airflow.operators.base import CupidOperator

__all__ = ["CallbackOperator"]


class CallbackOperator(CupidOperator):
    """POSTs compare's events to the destination's callback URL."""

    def __init__(self, *, events: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events = events

    def execute(self, context: Context) -> Any:
        raise NotImplementedError("CallbackOperator is not implemented yet")
