"""Stands in for the tasks of a config that does not load, so the error is seen and never run past."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

__all__ = ["ConfigErrorOperator"]


class ConfigErrorOperator(BaseOperator):
    """Fails, without retries, with the config's errors.

    :param errors: the validation message, one problem per line.
    """

    ui_color = "#ffb3b3"

    def __init__(self, *, errors: str, **kwargs: Any) -> None:
        super().__init__(retries=0, **kwargs)
        self.errors = errors

    def execute(self, context: Context) -> None:
        raise AirflowFailException(f"invalid cupid config:\n{self.errors}")
