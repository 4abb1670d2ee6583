"""What every cupid operator holds: the config file, which destination of it is its pair, and the
rule that turns failures no retry can fix into a failure at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

from airflow.sdk import BaseOperator, Context

from cupid_airflow import metrics
from cupid_airflow.config import CupidConfig
from cupid_airflow.core.codec import STATE_VERSION, StateError
from cupid_airflow.core.errors import error_notes
from cupid_airflow.core.events import Event, EventChunks, EventSpool, event_chunk_key
from cupid_airflow.core.tally import TALLY_KEY, Tally, combined
from cupid_airflow.dialects import permanent_reason
from cupid_airflow.exceptions import CupidFailure
from cupid_airflow.hooks.variables import VariableStore
from cupid_airflow.pair import SyncPair

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["MAP_INDEX_TEMPLATE", "CupidOperator"]

_T = TypeVar("_T")
#: Where a task puts its label in the context, and the ``map_index_template`` of the mapped tasks
#: that renders it once the task ends: the grid then reads ``ids 1..200,000`` instead of ``compare 0``.
LABEL_KEY = "cupid_label"
MAP_INDEX_TEMPLATE = "{{ " + LABEL_KEY + " | default('') }}"


class CupidOperator(BaseOperator):
    """Base for the cupid tasks of one (config file, destination) pair.

    Operators carry the config's *path*, never its content: Airflow stores mapped tasks' arguments
    in the metadata database, and a config holds passwords. The config is read again when the task
    runs, which is also when the worker re-parses the DAG file.

    Subclasses implement :meth:`run`. An error that no retry can fix (see
    :func:`cupid_airflow.dialects.permanent_reason`) fails the task at once, with the alert,
    instead of spending its retries.

    :param config_file: path of the cupid JSON config.
    :param destination: index of the destination in the config's ``des`` list.
    :param pair_id: the pair's scan DAG id (default: this DAG's id), part of every event id.
    """

    template_fields = ()
    ui_color = "#f2e6ff"
    #: What this task did, once it said (:meth:`record`).
    tally: Tally | None = None

    def __init__(self, *, config_file: str, destination: int = 0, pair_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_file = config_file
        self.destination = destination
        self.pair_id = pair_id

    def default_pair_id(self) -> str:
        return self.dag_id

    @cached_property
    def pair(self) -> SyncPair:
        """The pair, read from the config file when the task runs. A config that no longer loads
        (being rewritten by a deploy, say) stays a retryable error: the DAG was valid when parsed."""
        pair = SyncPair.load(self.config_file, self.destination, self.pair_id or self.default_pair_id())
        pair.mask_secrets()
        return pair

    @property
    def config(self) -> CupidConfig:
        return self.pair.config

    @cached_property
    def variables(self) -> VariableStore:
        return VariableStore()

    def compare_outcomes(self, context: Context, run_ids: list[str]) -> dict[str, bool | None]:
        """How the compares of earlier runs ended: True when all succeeded (or there was nothing
        to compare), None while the run is still going, False otherwise (a compare failed, never
        ran because a scan failed, or the run is gone).

        The run's state is asked for only when its compares did not all succeed: each question is
        an Execution API call, and a run whose compares all passed has checked its ranges whether
        or not its callbacks are still delivering."""
        if not run_ids:
            return {}
        ti: Any = context["ti"]
        states = ti.get_task_states(dag_id=self.dag_id, task_ids=["compare"], run_ids=run_ids)
        outcomes: dict[str, bool | None] = {}
        for run_id in run_ids:
            compares = [str(s).lower() for s in (states.get(run_id) or {}).values()]
            if compares and all(s.endswith(("success", "skipped")) for s in compares):
                outcomes[run_id] = True
                continue
            try:
                run_state = str(ti.get_dagrun_state(dag_id=self.dag_id, run_id=run_id)).lower()
            except Exception:  # the run was deleted: nothing says its ranges were checked
                run_state = "gone"
            outcomes[run_id] = None if run_state.endswith(("running", "queued")) else False
        return outcomes

    def event_spool(self, context: Context) -> EventSpool:
        """Where this task puts its events: returned as they are, or in XCom chunks past
        :data:`~cupid_airflow.core.events.EVENT_CHUNK` (its callback reads them a chunk at a time)."""
        ti: Any = context.get("ti")  # absent when a test or bench calls execute() directly

        def push(key: str, events: list[Event]) -> None:
            if ti is None:
                raise StateError(
                    f"{self.task_id} found more than one XCom chunk of events but runs without a task instance"
                )
            ti.xcom_push(key=key, value=events)

        map_index = getattr(ti, "map_index", None)
        return EventSpool(push, self.task_id, -1 if map_index is None else map_index)

    def event_chunks(self, context: Context, output: list[Event] | EventChunks) -> Iterator[list[Event]]:
        """An upstream task's events (:func:`~cupid_airflow.core.events.read_event_output`) a
        chunk at a time: only the chunk in hand is held."""
        if isinstance(output, list):
            yield output
            return
        ti: Any = context["ti"]
        for index in range(output["chunks"]):
            key = event_chunk_key(index)
            chunk = ti.xcom_pull(task_ids=output["task_id"], map_indexes=output["map_index"], key=key)
            if not isinstance(chunk, list):
                raise StateError(
                    f"XCom {key!r} of {output['task_id']}[{output['map_index']}] is gone: clear that task "
                    "(it finds the events again) and this one"
                )
            yield chunk

    def execute(self, context: Context) -> Any:
        return self.guarded(self.run, context)

    @staticmethod
    def show_as(context: Context, text: str) -> None:
        """This task instance's name in the UI when it is mapped (:data:`MAP_INDEX_TEMPLATE`)."""
        context[LABEL_KEY] = text  # type: ignore[literal-required]  # Airflow renders it after the task

    def record(self, context: Context, task: str, **figures: Any) -> Tally:
        """Keep what this task did (:class:`~cupid_airflow.core.tally.Tally`) as its XCom
        ``cupid_tally``, for the run note and the cupid view, in :attr:`tally` for lineage, and as
        metrics. A failing task records before it raises: what it did still counts."""
        return self.record_part(context, task, figures, None)

    def record_part(self, context: Context, task: str, figures: dict[str, Any], carried: Tally | None) -> Tally:
        """:meth:`record` for a task that deferred: ``carried`` is what it did before (metrics
        counted it then; the XCom holds both parts)."""
        part = cast(Tally, {"version": STATE_VERSION, "task": task, **figures})
        metrics.emit(self.dag_id, part)
        tally = part if carried is None else combined(carried, part)
        self.tally = tally
        ti: Any = context.get("ti")  # absent when a test or bench calls execute() directly
        if ti is not None:
            ti.xcom_push(key=TALLY_KEY, value=tally)
        return tally

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage[Any, Any]:
        """This task's tables and findings (:func:`cupid_airflow.lineage.operator_lineage`), asked by
        the OpenLineage provider's listener, when installed, after the task succeeded or failed."""
        from cupid_airflow.lineage import operator_lineage

        return operator_lineage(self.pair, self.tally)

    def run(self, context: Context) -> Any:
        raise NotImplementedError

    def guarded(self, method: Callable[[Context], _T], context: Context) -> _T:
        """``method(context)``, with failures no retry can fix raised as :class:`CupidFailure`."""
        try:
            return method(context)
        except CupidFailure:
            raise
        except StateError as e:
            raise CupidFailure(str(e)) from None
        except Exception as e:
            reason = permanent_reason(e)
            if reason is None:
                raise
            where = error_notes(e)
            raise CupidFailure(
                f"{reason}{f' ({where})' if where else ''}; retrying cannot fix this: check the config and the tables"
            ) from e
