"""Compares one partition of source rows with the destination; returns the divergent rows as events."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from cupid_airflow.operators.base import CupidOperator

__all__ = ["CompareOperator"]


class CompareOperator(CupidOperator):
    """Compares one partition of source rows with the destination; returns the divergent rows as events."""

    def __init__(self, *, partition: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.partition = partition

    def execute(self, context: Context) -> Any:
        raise NotImplementedError("CompareOperator is not implemented yet")
