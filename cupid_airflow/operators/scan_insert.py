"""Claims the next range of new source ids and splits it into compare partitions."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from cupid_airflow.operators.base import CupidOperator

__all__ = ["ScanInsertOperator"]


class ScanInsertOperator(CupidOperator):
    """Claims the next range of new source ids and splits it into compare partitions."""

    def execute(self, context: Context) -> Any:
        raise NotImplementedError("ScanInsertOperator is not implemented yet")
