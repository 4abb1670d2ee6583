"""What every cupid operator holds: the config file and which destination of it is its pair."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.log import mask_secret

from cupid_airflow.config import CupidConfig, Destination, load_config
from cupid_airflow.hooks.table import Table, db_hook

__all__ = ["CupidOperator"]


class CupidOperator(BaseOperator):
    """Base for the cupid tasks of one (config file, destination) pair.

    Operators carry the config's *path*, never its content: Airflow stores mapped tasks' arguments
    in the metadata database, and a config holds passwords. The config is read again when the task
    runs, which is also when the worker re-parses the DAG file.

    :param config_file: path of the cupid JSON config.
    :param destination: index of the destination in the config's ``des`` list.
    """

    template_fields = ()
    ui_color = "#f2e6ff"

    def __init__(self, *, config_file: str, destination: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_file = config_file
        self.destination = destination

    @cached_property
    def config(self) -> CupidConfig:
        config = load_config(self.config_file)
        for secret in config.secrets():
            mask_secret(secret)
        return config

    @property
    def des(self) -> Destination:
        return self.config.des[self.destination]

    def source_table(self) -> Table:
        return Table(db_hook(self.config.src, f"cupid_{self.dag_id}_src"), self.config.src.table)

    def destination_table(self) -> Table:
        return Table(db_hook(self.des, f"cupid_{self.dag_id}_des"), self.des.table)

    def state_key(self, name: str) -> str:
        """The Airflow Variable that keeps this DAG's ``name`` state (insert cursor, update high-water mark)."""
        return f"cupid.{self.dag_id}.{name}"
