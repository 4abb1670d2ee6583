"""The run params of a pair DAG: what ``airflow dags trigger --conf`` and the UI's trigger form may set.

Each is an Airflow Param with a JSON schema, which the UI turns into a typed form field and the
API server checks a trigger's conf against. Airflow's ``Param.resolve`` calls
``jsonschema.validate``, which first checks the *schema* against the JSON Schema meta-schema
(about 0.9 ms) every time; serializing a DAG resolves every task's copy of the params several times
(comparisons with defaults, a mapped task's ``repr``), some 30 resolves per pair DAG, which made up
most of the dag-processor's time with hundreds of configs. :class:`RunParam` checks each schema
once per process and then validates values only; what Airflow stores and shows is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from airflow.sdk import Param
from airflow.sdk.definitions._internal.types import NOTSET, is_arg_set
from airflow.sdk.exceptions import ParamValidationError
from jsonschema import FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

__all__ = ["RunParam", "asks_again", "run_params"]


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Validator:
    """A validator for one schema, whose own check against the meta-schema ran once."""
    schema = json.loads(schema_json)
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=FormatChecker())


class RunParam(Param):
    """A Param whose ``resolve`` checks its schema once per process, not at every call.

    Same values, same errors, same serialized form as Airflow's Param.
    """

    def __init__(self, default: Any = NOTSET, description: str | None = None, **kwargs: Any) -> None:
        super().__init__(default, description, **kwargs)
        _validator(self._schema_json())  # a broken schema fails the DAG file, as Param's first resolve would

    def _schema_json(self) -> str:
        return json.dumps(self.schema)  # key order kept: it shows in the error message

    def resolve(self, value: Any = NOTSET, suppress_exception: bool = False) -> Any:
        """:meth:`Param.resolve` with a cached validator."""
        if value is not NOTSET:
            self._check_json(value)  # type: ignore[no-untyped-call]
        final = self.value if value is NOTSET else value
        if not is_arg_set(final):
            if suppress_exception:
                return None
            raise ParamValidationError("No value passed and Param has no default value")
        error = best_match(_validator(self._schema_json()).iter_errors(final))
        if error is not None:
            if suppress_exception:
                return None
            raise ParamValidationError(error) from None
        self.value = final
        return final


# Airflow's serializer recognises a Param by its class's module and name, and boxes anything else
# into Param(value), which fails for a Param object: RunParam answers to the name of Param.
RunParam.__module__, RunParam.__name__ = Param.__module__, Param.__name__


def asks_again(params: Mapping[str, Any], run_type: Any) -> bool:
    """Whether a person asked this run to look again (``start_id``, ``since``/``until``, a
    backfill): it reports everything it finds, what was called back minutes ago too."""
    backfill = str(getattr(run_type, "value", run_type)).lower() == "backfill"
    return backfill or any(params.get(name) is not None for name in ("start_id", "since", "until"))


def run_params() -> dict[str, Param]:
    """What ``airflow dags trigger --conf`` (and the UI's trigger form) may set for one run."""
    optional_int: dict[str, Any] = {"type": ["null", "integer"], "minimum": 1}
    optional_time: dict[str, Any] = {"type": ["null", "string"], "format": "date-time"}
    return {
        "start_id": RunParam(None, description="Restart the insert cursor at this id (cupid's -s).", **optional_int),
        "end_id": RunParam(None, description="With start_id: re-check ids start_id..end_id only.", **optional_int),
        "since": RunParam(None, description="With until: re-check rows updated in [since, until).", **optional_time),
        "until": RunParam(None, description="End of the window to re-check (exclusive).", **optional_time),
    }
