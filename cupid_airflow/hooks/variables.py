"""Airflow Variables as a :class:`cupid_airflow.core.codec.Store`: where scan positions and alert
marks live (JSON values; a bare string written before the state was versioned reads as itself)."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Variable

__all__ = ["VariableSnapshot", "VariableStore"]


def _decode(raw: str | None, default: Any) -> Any:
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class VariableStore:
    def get(self, key: str, default: Any = None) -> Any:
        return _decode(Variable.get(key, default=None), default)

    def set(self, key: str, value: Any) -> None:
        Variable.set(key, value, serialize_json=True)

    def delete(self, key: str) -> None:
        Variable.delete(key)


class VariableSnapshot:
    """Variables already read (key -> raw text), as a read-only store: the cupid view reads the
    scan state of every pair in one query, then through the same readers the tasks use."""

    def __init__(self, raw: dict[str, str | None]) -> None:
        self.raw = raw

    def get(self, key: str, default: Any = None) -> Any:
        return _decode(self.raw.get(key), default)

    def set(self, key: str, value: Any) -> None:
        raise TypeError("a VariableSnapshot is read-only")

    def delete(self, key: str) -> None:
        raise TypeError("a VariableSnapshot is read-only")
