"""Airflow Variables as a :class:`cupid_airflow.core.state.Store`: where scan positions and alert
marks live (JSON values; a bare string written before the state was versioned reads as itself)."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Variable

__all__ = ["VariableStore"]


class VariableStore:
    def get(self, key: str, default: Any = None) -> Any:
        raw = Variable.get(key, default=None)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def set(self, key: str, value: Any) -> None:
        Variable.set(key, value, serialize_json=True)

    def delete(self, key: str) -> None:
        Variable.delete(key)
