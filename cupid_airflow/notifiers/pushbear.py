"""PushBearNotifier: cupid's alerts, for task failures, callback retries and missed deadlines."""

from __future__ import annotations

import hashlib
import json
import re
import time
from functools import cached_property
from typing import Any

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from cupid_airflow.config import ConfigError, load_config
from cupid_airflow.core.alerts import read_alert_mark, write_alert_mark
from cupid_airflow.exceptions import CallbackDeliveryError, ReceiverGoneError
from cupid_airflow.hooks.pushbear import PushBearHook
from cupid_airflow.hooks.variables import VariableStore

__all__ = ["PushBearNotifier", "send_pushbear_notification"]


#: The same failure of a DAG (task, kind of alert, error with its numbers blanked) is alerted once
#: in this many seconds: a config that fails every run pages once an hour, not every minute.
REPEAT_SECONDS = 3600


class PushBearNotifier(BaseNotifier):
    """Sends a PushBear message that says which DAG, task and try failed, why, and what is waiting.

    Works as ``on_failure_callback``/``on_retry_callback`` (``notify``) and as a Deadline Alert's
    ``AsyncCallback`` in the triggerer (``async_notify``). An alert that cannot be sent is logged;
    it never fails the task.

    :param text: the title; default: built from the context.
    :param desp: the body (Markdown); default: built from the context.
    :param config_file: a cupid config whose ``src.pushbearSendKey`` is the key (read when sending,
        so the key is never serialized with the DAG or the deadline).
    :param sendkey: the key itself, when there is no config file.
    :param pushbear_conn_id: connection with the service's base URL and, as password, a key.
    :param only_on_try: notify only when the failed try is this one (cupid alerts at the 3rd failure).
    """

    template_fields = ("text", "desp")

    def __init__(
        self,
        *,
        text: str | None = None,
        desp: str | None = None,
        config_file: str | None = None,
        sendkey: str | None = None,
        pushbear_conn_id: str = PushBearHook.default_conn_name,
        only_on_try: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(context=kwargs.pop("context", None))
        self.text = text
        self.desp = desp
        self.config_file = config_file
        self.sendkey = sendkey
        self.pushbear_conn_id = pushbear_conn_id
        self.only_on_try = only_on_try
        self.extra = kwargs

    @cached_property
    def hook(self) -> PushBearHook:
        sendkey = self.sendkey
        if sendkey is None and self.config_file:
            try:
                sendkey = load_config(self.config_file).src.pushbear_send_key or None
            except ConfigError as e:
                self.log.error("PushBear: cannot read the sendkey from %s: %s", self.config_file, e)
        return PushBearHook(pushbear_conn_id=self.pushbear_conn_id, sendkey=sendkey)

    def message(self, context: Any) -> tuple[str, str]:
        """Title and body from an Airflow context (task callbacks) or a deadline's simple context."""
        if self.text and self.desp:
            return self.text, self.desp
        ti = context.get("ti")
        dag_run = context.get("dag_run")
        if ti is None and isinstance(dag_run, dict):  # a missed deadline, from the triggerer
            deadline = context.get("deadline", {})
            title = f"cupid: {dag_run.get('dag_id')} 超时 missed its deadline"
            lines = [
                f"- DAG: `{dag_run.get('dag_id')}`",
                f"- run: `{dag_run.get('dag_run_id') or dag_run.get('run_id')}` ({dag_run.get('state')})",
                f"- deadline: {deadline.get('deadline_time')}",
                "- 运行超时 / the run is still not finished: check the scheduler, workers and the callback receiver",
            ]
            return self.text or title, self.desp or "\n".join(lines)
        task = context.get("task")
        dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        map_index = getattr(ti, "map_index", -1)
        try_number = getattr(ti, "try_number", None)
        retries = getattr(task, "retries", None)
        error = context.get("exception")
        waiting = error.undelivered if isinstance(error, CallbackDeliveryError | ReceiverGoneError) else None
        final = isinstance(error, AirflowFailException) or (
            try_number is not None and retries is not None and try_number > retries
        )
        title = f"cupid: {dag_id}.{task_id} {'失败 failed for good' if final else '失败 failed'}"
        lines = [
            f"- DAG: `{dag_id}`",
            f"- task: `{task_id}`" + (f" [{map_index}]" if map_index is not None and map_index >= 0 else ""),
            f"- run: `{getattr(dag_run, 'run_id', context.get('run_id', '?'))}`",
            f"- try: {try_number}" + (f" of {retries + 1}" if retries is not None else ""),
            f"- error: {type(error).__name__ + ': ' if isinstance(error, BaseException) else ''}{error}",
        ]
        if waiting is not None:
            lines.append(f"- 等待回调 events waiting for delivery: {waiting}")
        return self.text or title, self.desp or "\n".join(lines)

    def _wanted(self, context: Any) -> bool:
        if self.only_on_try is None:
            return True
        return getattr(context.get("ti"), "try_number", None) == self.only_on_try

    def notify(self, context: Any) -> None:
        if not self._wanted(context):
            return
        ti, error = context.get("ti"), context.get("exception")
        dag_id = getattr(ti, "dag_id", None)
        signature = hashlib.sha256(
            json.dumps(
                [
                    getattr(ti, "task_id", ""),
                    self.only_on_try,
                    type(error).__name__,
                    re.sub(r"\d+", "#", str(error))[:500],
                ]
            ).encode()
        ).hexdigest()[:16]
        store, now = VariableStore(), time.time()
        if dag_id is not None:
            try:
                last = read_alert_mark(store, dag_id)
            except Exception:  # the metadata database is unreachable: alert rather than stay silent
                last = None
            if last is not None and last["signature"] == signature and now - last["at"] < REPEAT_SECONDS:
                self.log.info(
                    "PushBear: the same failure was alerted %d s ago; not sent again before %d s have passed",
                    now - last["at"], REPEAT_SECONDS,
                )  # fmt: skip
                return
        if self.hook.send(*self.message(context)) and dag_id is not None:
            try:
                write_alert_mark(store, dag_id, signature, now)
            except Exception as e:
                self.log.warning("PushBear: could not record the alert (%s): the next failure alerts again", e)

    async def async_notify(self, context: Any) -> None:
        if self._wanted(context):
            await self.hook.async_send(*self.message(context))


send_pushbear_notification = PushBearNotifier
