"""Repairs what one compare (or reconcile) task confirmed: writes the fix SQL and, in ``apply``
mode, applies it on the destination through the write connection, after a person approved what
cannot be undone."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from cupid_airflow import metrics
from cupid_airflow.config import Repair
from cupid_airflow.core.codec import Store
from cupid_airflow.core.compare import lookup_keys, to_text
from cupid_airflow.core.events import Event, EventDigest, read_event_output
from cupid_airflow.core.repair import Fix, RepairColumns, RepairKind, RepairPlan, plan_repairs
from cupid_airflow.core.repair_progress import Outcome, RepairProgress
from cupid_airflow.exceptions import CupidFailure, RepairError
from cupid_airflow.hooks.table import Table
from cupid_airflow.names import path_part
from cupid_airflow.operators.base import CupidOperator

__all__ = ["APPROVE", "REJECT", "RepairOperator", "approval_body", "error_code"]

APPROVE, REJECT = "Approve", "Reject"
#: Fixes a request for approval shows.
SAMPLE_FIXES = 10
#: Characters of a value a sample shows.
SAMPLE_CHARS = 60


class RepairOperator(CupidOperator):
    """Repairs the divergences one upstream task reported (the events its ``callback`` delivers:
    each confirmed, none in flight), per the destination's ``repair`` object.

    * Each fix is planned from both sides' rows read again now (:mod:`cupid_airflow.core.repair`):
      a row that moved on since the compare is not repaired, and every UPDATE and DELETE is guarded
      by the destination values it saw.
    * The fix SQL goes to ``<repair.dir>/<dag_id>/<run_id>/repair-NNNN.sql``, in either mode.
    * ``apply``: the statements run through ``repair.connId`` in transactions of ``batchRows``.
      A plan with deletes, or more than ``approveRows`` fixes, waits for a person in the UI's
      Required actions (Airflow's human-in-the-loop: no triggerer, no worker slot while it waits);
      rejected, or not answered in ``approvalTimeoutSeconds``, nothing is applied and the pair's
      PushBear alert says so.
    * Outcomes (applied, skipped by a guard, failed) are kept in the task instance's state store
      after every batch: a try after a killed one neither repeats a fix nor counts one twice. What
      was applied is read back and counted repaired only when the destination now holds it.

    :param events: the events of one compare or reconcile task (mapped), or where its chunks are.
    :param ask_approval: ask a person when a plan needs approval (reconcile DAGs); False: hold it
        (scan DAGs, whose next runs would wait for the answer).
    """

    ui_color = "#d9e8f2"

    def __init__(
        self, *, events: list[dict[str, Any]] | dict[str, Any] | None, ask_approval: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.events = events
        self.ask_approval = ask_approval

    @property
    def settings(self) -> Repair:
        settings = self.pair.des.repair
        if settings is None:
            raise CupidFailure(f"{self.config_file}: des[{self.destination}] has no 'repair' object any more")
        return settings

    def run(self, context: Context) -> dict[str, Any]:
        return self._repair(context, approved=False)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """A person answered (or the wait timed out: the default, Reject, was taken)."""
        return self.guarded(lambda ctx: self._answered(ctx, event), context)

    # ------------------------------------------------------------------ the work

    def _all_events(self, context: Context) -> list[Event]:
        output = read_event_output(self.events)
        return [event for chunk in self.event_chunks(context, output) for event in chunk]

    @staticmethod
    def _progress(context: Context, events: list[Event], kept: bool) -> RepairProgress:
        """What earlier tries of this task did, in its state store (``kept``: apply mode)."""
        store: Store | None = context.get("task_state_store") if kept else None
        return RepairProgress.read(store, EventDigest.of(events), len(events))

    def _repair(self, context: Context, approved: bool) -> dict[str, Any]:
        """Plan what is left to do (:meth:`RepairProgress.todo`), write the fix SQL, and in apply
        mode apply it, once a plan that needs one has a person's approval."""
        settings = self.settings
        events = self._all_events(context)
        progress = self._progress(context, events, kept=settings.mode == "apply")
        if approved and progress.approved != progress.asked:
            progress.approved = set(progress.asked)  # what the person saw, not what a plan now holds
            progress.rejected -= progress.asked
            progress.write()
        todo = progress.todo()
        position = {events[i]["eventId"]: i for i in todo}
        self.show_as(context, f"{len(events):,} events")
        with self._table(settings) as table:
            plan = self._plan(table, [events[i] for i in todo])
            if settings.mode == "apply":
                table.conn.commit()  # end the read's transaction: the guards, not a snapshot, hold the rows
            started = progress.started or bool(progress.flight)
            holding = progress.settle(plan, position)
            statements = table.fix_statements(plan.fixes)
            # a retry's remaining fixes do not replace the script of the whole plan
            script = self._write_script(context, table, plan, statements, keep=started)
            summary: dict[str, Any] = {
                "mode": settings.mode, "kinds": plan.counts(), "script": str(script) if script else None,
            }  # fmt: skip
            if settings.mode == "sql":
                figures = {"planned": len(plan.fixes), "settled": len(plan.settled), "moved": len(plan.moved)}
                self.show_as(context, f"{len(plan.fixes):,} fixes written")
                self.record(context, "repair", **figures, **_where(script))
                return {**summary, **figures}
            asked = {position[fix.event_id] for fix in plan.fixes}
            reason = plan.approval_reason(settings.approve_rows)
            if reason is None and asked & progress.rejected:
                reason = f"{len(asked & progress.rejected):,} of these fixes were rejected before"
            if reason is not None and not asked <= progress.approved:
                progress.asked = asked
                progress.write()
                if not self.ask_approval:
                    return self._hold(context, progress, plan, reason, summary)
                self._ask(context, plan, reason, script, settings)
            applied = self._apply(table, plan, statements, progress, position, settings.batch_rows)
            # read back: an applied fix counts repaired when a plan now finds nothing to do for it
            applied_events = [events[position[fix.event_id]] for fix in applied]
            repaired = holding + (len(self._plan(table, applied_events, reading_back=True).settled) if applied else 0)
        return self._finish(context, progress, plan, repaired, summary)

    def _hold(
        self,
        context: Context,
        progress: RepairProgress,
        plan: RepairPlan,
        reason: str,
        summary: dict[str, Any],
    ) -> dict[str, Any]:
        """A scan run's plan that needs approval is not applied, and no one is asked: the run
        would stay open, and with it the pair's scans (one run at a time), until someone answers.
        Its fix SQL stays for a person; a reconcile run that finds the rows again asks."""
        held = len(plan.fixes)
        self.log.warning("%s: not applied from a scan run (a request would hold the pair's next runs): the fix "
                         "SQL is in %s; a reconcile run asks for approval", reason, summary["script"])  # fmt: skip
        self.show_as(context, f"{held:,} fixes held for approval")
        self.record(context, "repair", planned=held, held=held, **_where(summary["script"]))
        self._count(progress, {"held": held})
        self._alert(context, f"cupid: repair of {self.pair.label} held ({reason})", "held: not applied from a scan run")
        return {**summary, "held": held}

    def _count(self, progress: RepairProgress, figures: dict[str, int]) -> None:
        """Metrics of what no earlier try counted (the state store outlives a cleared task)."""
        metrics.repairs(self.dag_id, progress.unsent(figures))
        progress.write()

    def _table(self, settings: Repair) -> Table:
        """The table that plans and writes: the write connection reads the guards' values too, so
        they are the rows it will update."""
        if settings.mode != "apply":
            return self.pair.destination_table()
        table = self.pair.repair_table()
        try:
            return table.writing()
        except BaseException:
            table.close()
            raise

    def _plan(self, table: Table, events: Sequence[Event], reading_back: bool = False) -> RepairPlan:
        pair = self.pair
        keys = [k for e in events for k in lookup_keys(e.get("byValue"))]
        with pair.source_table() as source:
            src_rows, des_rows, _ = pair.recheck_rows(source, table, keys, stamp=False)
        columns = RepairColumns(pair.src.by_column, pair.src_columns, pair.des.by_column, pair.des_columns)
        plan = plan_repairs(events, [row[1:] for row in src_rows], des_rows, columns)
        if reading_back:
            return plan
        self.log.info(
            "Repair plan for %d events: %s; %d already repaired at the destination, %d moved on since (not repaired)",
            len(events), ", ".join(f"{n:,} {kind}" for kind, n in sorted(plan.counts().items())) or "nothing to write",
            len(plan.settled), len(plan.moved),
        )  # fmt: skip
        return plan

    def _script_path(self, context: Context) -> Path:
        """``<repair.dir>/<dag_id>/<run_id>/repair-NNNN.sql``: ids as safe folder names."""
        base = Path(self.settings.dir or Path(os.environ.get("AIRFLOW_HOME", ".")) / "cupid-repairs")
        map_index = getattr(context.get("ti"), "map_index", -1)
        return base / path_part(self.dag_id) / path_part(str(context["run_id"])) / f"repair-{max(map_index, 0):04d}.sql"

    def _write_script(
        self, context: Context, table: Table, plan: RepairPlan, statements: list[bytes], keep: bool
    ) -> Path | None:
        path = self._script_path(context)
        if keep and path.exists():
            return path
        if not plan.fixes:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        map_index = getattr(context.get("ti"), "map_index", -1)
        header = (
            f"cupid repair of {self.pair.label} ({self.dag_id}, run {context['run_id']}, {self.task_id}[{map_index}])\n"
            f"{len(plan.fixes)} guarded statements: each changes nothing if its row moved on since the compare"
        )
        tmp = path.with_suffix(".sql.tmp")
        # the rows' data: readable by the owner and its group (the api-server's user), no one else
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640), "wb") as out:
            out.write(table.fix_script(plan.fixes, header, statements))
        tmp.replace(path)
        self.log.info("Wrote the fix SQL of %d repairs to %s", len(plan.fixes), path)
        return path

    def _ask(self, context: Context, plan: RepairPlan, reason: str, script: Path | None, settings: Repair) -> None:
        """Park the task until a person answers in Required actions (Airflow 3.3: no trigger)."""
        from airflow.sdk.exceptions import TaskAwaitingInput
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        ti: Any = context["ti"]
        counts = plan.counts()
        upsert_hitl_detail(
            ti_id=ti.id,
            options=[APPROVE, REJECT],
            subject=f"cupid: repair {self.pair.label}? {reason}",
            body=approval_body(plan, counts, script, self.pair.des.table),
            defaults=[REJECT],
            multiple=False,
            params={},
        )
        self.record(context, "repair", planned=len(plan.fixes), awaiting=len(plan.fixes), **_where(script))
        metrics.repairs(self.dag_id, {"awaiting": len(plan.fixes)})  # each request once
        self.show_as(context, f"{len(plan.fixes):,} fixes await approval")
        self.log.info("%s: waiting up to %d s for a person to approve in Required actions", reason,
                      settings.approval_timeout_seconds)  # fmt: skip
        raise TaskAwaitingInput(
            method_name="execute_complete", timeout=timedelta(seconds=settings.approval_timeout_seconds)
        )

    def _answered(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        chosen = event.get("chosen_options") or []
        timed_out = bool(event.get("timedout")) or "error" in event
        if chosen == [APPROVE] and not timed_out:
            self.log.info("Approved by %s", _who(event))
            return self._repair(context, approved=True)
        what = "timed out (nothing applied)" if timed_out else f"rejected by {_who(event)} (nothing applied)"
        events = self._all_events(context)
        progress = self._progress(context, events, kept=True)
        progress.rejected |= progress.asked  # asked again, whatever a later plan's size
        progress.write()
        self.log.warning("The repair of %d events was %s", len(events), what)
        self.show_as(context, "repair " + what.split(" (")[0])
        script = self._script_path(context)
        self.record(context, "repair", rejected=len(events), **_where(script if script.exists() else None))
        metrics.repairs(self.dag_id, {"rejected": len(events)})  # each answer once
        self._alert(context, f"cupid: repair of {self.pair.label} {what}", what)
        return {"mode": "apply", "rejected": len(events), "timed_out": timed_out}

    def _alert(self, context: Context, title: str, what: str) -> None:
        from cupid_airflow.notifiers.pushbear import PushBearNotifier

        body = "\n".join(
            [
                f"- DAG: `{self.dag_id}`",
                f"- run: `{context['run_id']}`",
                f"- task: `{self.task_id}`",
                f"- 修复未执行 the repair was {what}; the fix SQL stays in the run's repair folder",
            ]
        )
        PushBearNotifier(config_file=self.config_file, text=title, desp=body).notify(context)

    def _apply(
        self,
        table: Table,
        plan: RepairPlan,
        statements: list[bytes],
        progress: RepairProgress,
        position: dict[str, int],
        batch: int,
    ) -> list[Fix]:
        """Each batch in one transaction; the outcomes kept after each. The batch in flight is
        saved before its commit: a try killed between the commit and the save finds its rows
        repaired (settled) and counts them applied, not again."""
        applied: list[Fix] = []
        for start in range(0, len(plan.fixes), batch):
            fixes = plan.fixes[start : start + batch]
            progress.flight = [position[f.event_id] for f in fixes]
            progress.write()
            results = table.apply(statements[start : start + batch])
            for fix, result in zip(fixes, results, strict=True):
                at = position[fix.event_id]
                if isinstance(result, Exception):
                    progress.outcomes[at] = Outcome.FAILED
                    self.log.warning("Repair %s (%s) refused: %s", fix.event_id, fix.kind.value, error_code(result))
                elif result:
                    progress.outcomes[at] = Outcome.APPLIED
                    applied.append(fix)
                else:
                    progress.outcomes[at] = Outcome.SKIPPED
            progress.flight = []
            progress.write()
        return applied

    def _finish(
        self,
        context: Context,
        progress: RepairProgress,
        plan: RepairPlan,
        repaired: int,
        summary: dict[str, Any],
    ) -> dict[str, Any]:
        figures = {
            "planned": sum(progress.count(o) for o in (Outcome.APPLIED, Outcome.SKIPPED, Outcome.FAILED)),
            "repaired": repaired,
            "skipped": progress.count(Outcome.SKIPPED),
            "repair_failed": progress.count(Outcome.FAILED),
            "settled": progress.count(Outcome.SETTLED),
            "moved": progress.count(Outcome.MOVED),
        }
        applied = progress.count(Outcome.APPLIED)
        if applied > repaired:
            self.log.warning("%d applied repairs no longer hold: their rows changed again since", applied - repaired)
        self.record(context, "repair", **figures, **_where(summary["script"]))
        skipped, failed = figures["skipped"], figures["repair_failed"]
        self._count(progress, {k: figures[k] for k in ("repaired", "skipped", "settled", "moved")})
        self.show_as(context, f"{repaired:,} repaired, {skipped:,} skipped, {failed:,} failed")
        self.log.info(
            "Repaired %d (read back), %d skipped (the row moved on before its statement), %d failed; "
            "%d already repaired, %d moved on before the plan",
            repaired, figures["skipped"], figures["repair_failed"], figures["settled"], figures["moved"],
        )  # fmt: skip
        if figures["repair_failed"]:
            raise RepairError(
                f"{figures['repair_failed']} of {len(progress.outcomes)} repairs were refused by {self.pair.des.table} "
                "(see the log for their event ids and errors); the next try applies them again"
            )
        return {**summary, **figures}


def approval_body(plan: RepairPlan, counts: dict[str, int], script: Path | None, table: str) -> str:
    """What a person reads before approving: counts by kind, a sample of the fixes, the fix SQL."""
    lines = [
        f"cupid would change **{len(plan.fixes):,} rows** of `{table}`: "
        + ", ".join(f"{counts.get(kind.value, 0):,} {kind.value}s" for kind in RepairKind)
        + ". Each statement is guarded: a row changed since the compare is left alone.",
        "",
        "| | key | columns written |",
        "|---|---|---|",
    ]
    for fix in plan.fixes[:SAMPLE_FIXES]:
        written = ", ".join(f"`{name}` = {_sample(value)}" for name, value in fix.values) or "(the row is deleted)"
        lines.append(f"| {fix.kind.value} | {_sample(fix.guard[0][1])} | {written} |")
    if len(plan.fixes) > SAMPLE_FIXES:
        lines.append(f"| … | {len(plan.fixes) - SAMPLE_FIXES:,} more | |")
    if script is not None:
        lines += ["", f"Fix SQL: `{script}`"]
    lines += ["", "Approve applies them now; Reject (or no answer in time) applies nothing."]
    return "\n".join(lines)


def _where(script: Path | str | None) -> dict[str, str]:
    """The tally's ``script``: the run note and the cupid view link the fix SQL."""
    return {"script": str(script)} if script else {}


def _sample(value: Any) -> str:
    text = to_text(value)
    if text is None:
        return "NULL"
    text = text.replace("|", "\\|").replace("`", "'").replace("\n", " ").replace("\r", " ")
    return f"`{text[:SAMPLE_CHARS]}{'…' if len(text) > SAMPLE_CHARS else ''}`"


def _who(event: dict[str, Any]) -> str:
    user = event.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "someone") if isinstance(user, dict) else str(user)


def error_code(error: Exception) -> str:
    """A driver error as its class and code, not its message: a constraint's message quotes the
    row's values."""
    code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    args = getattr(error, "args", ())
    if code is None and args and isinstance(args[0], int):
        code = args[0]
    return f"{type(error).__name__}{f' {code}' if code is not None else ''}"
