"""Airflow DAG file: one cupid DAG per (config, destination) in ``configs/`` beside this file.

Set ``CUPID_CONFIG_DIR`` to read configs from elsewhere.
"""

from cupid_airflow.dag_factory import build_dags

globals().update(build_dags(__file__))
