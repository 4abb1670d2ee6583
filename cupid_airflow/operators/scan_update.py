"""Finds the source rows whose update column lies in the run's window."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from cupid_airflow.operators.base import CupidOperator

__all__ = ["ScanUpdateOperator"]


class ScanUpdateOperator(CupidOperator):
    """Finds the source rows whose update column lies in the run's window."""

    def execute(self, context: Context) -> Any:
        raise NotImplementedError("ScanUpdateOperator is not implemented yet")
