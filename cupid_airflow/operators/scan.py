"""The scan tasks of a pair's run: new ids, then updated rows (the planners of
:mod:`cupid_airflow.planning`); a small run finishes here."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, AssetAlias, Context
from airflow.sdk.definitions.asset import AssetNameRef

from cupid_airflow.confirming import CONFIRM_KEY, Confirmation
from cupid_airflow.core.codec import STATE_VERSION, StateError, Store
from cupid_airflow.core.compare import ID_COLUMN
from cupid_airflow.core.confirm import LOOK_GAP, REPORTED_MEMORY, WAIT_KEY, ConfirmWait, Found, read_confirm_wait
from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.events import CarriedEvents, Event, carried_events, event_types
from cupid_airflow.core.partitions import IdPartition, WindowPartition, read_partition, rows_at_most
from cupid_airflow.core.tally import Tally, read_tally
from cupid_airflow.core.watch import RECHECK_AT_KEY
from cupid_airflow.names import CUPID_TAG, backlog_alias_name, confirm_state_key, watch_asset_identity
from cupid_airflow.operators.base import CupidOperator
from cupid_airflow.planning import ScanRun
from cupid_airflow.planning.inserts import InsertPlan, InsertPlanner
from cupid_airflow.planning.updates import UpdatePlanner
from cupid_airflow.run_params import asks_again

__all__ = ["ScanInsertOperator", "ScanOperator", "ScanUpdateOperator", "backlog_alias"]

#: Task states in which a compare will never hand anything over.
_ENDED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
#: How long a scan waits for a compare of another run to hand its candidates over.
PENDING_SECONDS = 86_400

ScanOutput = (
    list[IdPartition | WindowPartition] | list[CarriedEvents] | list[IdPartition | WindowPartition | CarriedEvents]
)


def backlog_alias(pair_id: str) -> AssetAlias:
    """The scan task's outlet: an alias, so an event (a next run) is emitted only when the scan adds one."""
    return AssetAlias(name=backlog_alias_name(pair_id), group=CUPID_TAG)


class _ScanBase(CupidOperator):
    """What the scan tasks share: the run as the planners see it."""

    def scan_run(self, context: Context) -> ScanRun:
        dag_run = context.get("dag_run")
        return ScanRun(
            run_id=context["run_id"],
            params=context["params"],
            interval_start=context.get("data_interval_start"),
            interval_end=context.get("data_interval_end"),
            backfill=dag_run is not None and str(dag_run.run_type).lower().endswith("backfill"),
            compare_outcomes=lambda run_ids: self.compare_outcomes(context, run_ids),
        )


class ScanOperator(_ScanBase):
    """Claims new ids (``src.insert``: :class:`~cupid_airflow.planning.inserts.InsertPlanner`)
    and finds updated rows (``src.update``: :class:`~cupid_airflow.planning.updates.UpdatePlanner`)
    in one task, and returns their partitions for the mapped ``compare``.

    One task, not one per kind: a run costs a task process (about a second of start-up) per task
    in its path, and a watched pair's run is mostly one new or changed row. For the same reason a
    run whose partitions hold at most ``inlineRows`` rows (an index probe tells, before any row is
    read) compares them and sends their callbacks here, in one pass, and returns nothing: the
    mapped tasks are skipped. Events that pass does not deliver (or does not send in time:
    :data:`~cupid_airflow.callbacks.INLINE_SEND_SECONDS`) go on as
    :class:`~cupid_airflow.core.events.CarriedEvents` through ``compare`` to ``callback``, whose
    retries and alerts take them from there. Claims and windows settle as for any run: its
    ``compare`` ends skipped (nothing left) or successful.

    A retry of this task compares the same ranges again and resends what it found (the same
    event ids): delivery stays at-least-once.

    A watched pair's scan has :func:`backlog_alias` as its outlet. A claim cut short by
    ``maxRowsPerRun`` adds an event of the pair's watch asset through it, so the next run follows
    this one (``max_active_runs=1`` queues it): the watcher fires only when the table changes, and
    a backlog left on a quiet table would otherwise wait for the safety schedule. A run that took
    over ranges of a failed run does not: a lasting failure must not chain failing runs, each
    checking more than the last; the next insert or the safety schedule goes on from there.
    """

    ui_color = "#d9f2e6"

    def run(self, context: Context) -> ScanOutput:
        started = time.time()  # before the source's highest id is read
        src = self.config.src
        run = self.scan_run(context)
        inserts = InsertPlan()
        parts: list[IdPartition | WindowPartition] = []
        until = None
        if src.insert:
            inserts = InsertPlanner(self.pair, self.variables, self.log).plan(run)
            parts += inserts.partitions
            self._follow_backlog(context, inserts.backlog_ids)
        if src.update:
            claim = inserts.claim if src.insert and inserts.claim and inserts.claim[0] < inserts.claim[1] else None
            updates = UpdatePlanner(self.pair, self.variables, self.log).plan(run, lambda: claim)
            parts += updates.partitions
            until = updates.until
        where = {"max_id": inserts.max_id, "cursor": inserts.cursor, "until": until}
        position = {k: v for k, v in where.items() if v is not None}
        limit = self.config.inline_rows
        small = False
        if parts and limit:
            with self.pair.source_table() as table:
                small = rows_at_most(table, parts, limit, ID_COLUMN)
            if not small:
                self.log.info("More than inlineRows=%d rows to compare: %d mapped compare task(s)", limit, len(parts))
        if self.config.confirm_seconds or self.variables.get(confirm_state_key(self.pair.pair_id), None) is not None:
            probe = (inserts.max_id, started)
            again = asks_again(run.params, getattr(context.get("dag_run"), "run_type", None))
            return self._confirming(context, parts, position, inline=small or not parts, probe=probe, again=again)
        if not small:
            self.record(context, "scan", **position)
            return parts
        return self._compare_and_deliver(context, parts, position)

    def _follow_backlog(self, context: Context, backlog_ids: int) -> None:
        alias = backlog_alias(self.pair.pair_id)
        if not backlog_ids or alias not in self.outlets:
            return
        name, uri = watch_asset_identity(self.pair.pair_id)
        asset = Asset(name=name, uri=uri, group=CUPID_TAG)
        context["outlet_events"][alias].add(asset, extra={"backlog_ids": backlog_ids})
        self.log.info("%d source ids above this run's claim (maxRowsPerRun=%d): the next run follows this one",
                      backlog_ids, self.config.max_rows_per_run)  # fmt: skip

    def _compare_and_deliver(
        self, context: Context, parts: list[IdPartition | WindowPartition], position: dict[str, Any]
    ) -> list[CarriedEvents]:
        events: list[Event] = []
        rows = sum(self.pair.compare_partition(read_partition(p), events.extend) for p in parts)
        found = event_types(events)
        missing = found.get(Divergence.MISSING.key, 0)
        self.log.info(
            "Compared %d source rows here (inlineRows=%d): %d missing (type 1), %d different (type 2)",
            rows, self.config.inline_rows, missing, len(events) - missing,
        )  # fmt: skip
        left = self._deliver_inline(events)
        # events the scan delivered count here; the ones it hands on count in the callback's tally
        sent = len(events) - len(left)
        delivered = {"events": sent, "delivered": sent} if sent else {}
        self.record(context, "scan", **position, rows=rows, found=found, **delivered)
        return [carried_events(left)] if left else []

    def _confirming(
        self,
        context: Context,
        parts: list[IdPartition | WindowPartition],
        position: dict[str, Any],
        inline: bool,
        probe: tuple[int | None, float] | None,
        carried: Tally | None = None,
        wait_until: float | None = None,
        again: bool = False,
    ) -> ScanOutput:
        """The run with confirmation (``confirmSeconds``): what is found is a candidate until
        confirmed (:mod:`cupid_airflow.core.confirm`); this scan also takes in what earlier runs'
        mapped compares found, looks at the waiting candidates again, hands what is confirmed to
        delivery, and tells the watcher when to start the next look; a pair nobody watches waits for
        it in the triggerer (:meth:`look_again`). With ``confirmSeconds`` 0 (a pair that stopped
        confirming) it confirms what was left waiting, and drops the state."""
        run_id = context["run_id"]
        cap = self.config.confirm_seconds
        confirm = Confirmation(self.pair, self.variables, self.log, run_id, cap=cap, again=again)
        before = copy.deepcopy(confirm.state)
        now = time.time()
        taken = confirm.merge(self._handed_over(context, confirm), now)  # counted by the compares that found them
        unspilled = confirm.unspill()
        confirmed, own = self._outbox(context, confirm)
        rows, added, quick_cleared, repeated, just_found = 0, 0, 0, 0, frozenset[str]()
        frontier, seen_at = None, now
        if inline:
            found: list[Found] = []
            for part in parts:
                seen = confirm.seen(ids=part["kind"] == "ids")
                rows += self.pair.compare_partition(read_partition(part), found.extend, seen=seen)
            # read after the compare: ids above came later
            frontier = confirm.frontier() if found or confirm.confirmer.waiting else None
            seen_at = time.time()
            verdict = confirm.add(found, seen_at, frontier)
            confirm.spill(verdict.spilled)
            confirmed += verdict.confirmed
            added += verdict.added
            repeated += verdict.repeated
            just_found = frozenset(str(f.event.get("byValue")) for f in found)
        elif parts and cap:
            confirm.state["pending"].append([run_id, list(range(len(parts))), now])
        # the others waiting (those just found again were decided as they were found)
        rechecked = confirm.recheck(time.time(), skip=just_found)
        confirmed += rechecked.confirmed
        output: ScanOutput = parts
        left: list[Event] = []  # what this scan did not deliver: the callback task's

        def hand_over(events: list[Event]) -> None:
            """Confirmed events, delivered here (kept in the outbox until this run holds them: a
            scan killed meanwhile sends them again, never loses them)."""
            if not events:
                return
            confirm.state["outbox"][run_id] = [*left, *events]
            confirm.save()
            # once a delivery here fell short, the callback task (retries, alerts) takes the rest
            left.extend(self._deliver_inline(events) if not left else events)
            if left:
                confirm.state["outbox"][run_id] = list(left)
            else:
                confirm.state["outbox"].pop(run_id, None)

        if inline:
            hand_over(confirmed)
            if cap and confirm.quick_keys and confirm.close_behind:
                confirm.save()  # what waits is kept while this scan looks again
                quick = confirm.quick_look(frontier, seen_at, hand_over)
                confirmed += quick.confirmed
                added += quick.added
                repeated += quick.repeated
                quick_cleared = quick.cleared
            output = [carried_events(left)] if left else []
        elif confirmed:
            confirm.state["outbox"][run_id] = confirmed
            confirm.save()
            output = [*parts, carried_events(confirmed)]
        confirm.warn_clock()
        if repeated:
            self.log.info("%d divergences found again exactly as they were called back (within %.0f min): not called "
                          "back again", repeated, REPORTED_MEMORY / 60)  # fmt: skip
        if probe is not None:
            confirm.confirmer.probed(run_id, *probe)
        cleared = quick_cleared + rechecked.cleared
        sent = len(confirmed) - len(left) if inline else 0
        if not cap and confirm.idle:
            self.variables.delete(confirm.key)  # nothing left of confirming
            self.log.info("confirmSeconds=0: what was left waiting from when the pair confirmed is decided")
        elif confirm.state != before:
            confirm.save()
        if unspilled:  # after the state that took them in
            confirm.save_spilled()
        at = confirm.confirmer.next_look(time.time())
        self._wake_watcher(context, at)
        # a part resumed after waiting sends what its first part decided and did not deliver:
        # counted then
        found_types = event_types(confirmed[own if carried is not None else 0 :])
        waiting, hot, lag = confirm.confirmer.waiting, confirm.confirmer.hot, confirm.lag
        self.log.info(
            "Confirmation: %d found here, %d new candidates, %d taken over from compares, %d cleared in flight, "
            "%d confirmed, %d waiting (%d hot, %d kept aside); the destination's lag %s, window %.0f s "
            "(confirmSeconds=%d)",
            confirm.found, added, taken, cleared, len(confirmed), waiting, hot, confirm.state["spilled"],
            "unknown" if lag is None else f"{lag:.1f} s", confirm.confirmer.window(time.time()), cap,
        )  # fmt: skip
        figures: dict[str, Any] = {"found": found_types} if found_types else {}
        if inline:
            figures["rows"] = rows
        if sent:
            figures.update(events=sent, delivered=sent)
        figures.update(position, candidates=added, cleared=cleared, hot=hot,
                       waiting=waiting + confirm.state["spilled"])  # fmt: skip
        if lag is not None:
            figures["lag"] = round(lag, 3)
        tally = self.record_part(context, "scan", figures, carried)
        if at is not None and inline and not self.config.watch and cap and not left:
            self._wait(context, at, tally, time.time() + cap + 2 * LOOK_GAP if wait_until is None else wait_until)
        return output

    def _wait(self, context: Context, at: float, tally: Tally, until: float) -> None:
        """A pair nobody watches waits for its candidates' next look in the triggerer (no worker
        slot), for ``confirmSeconds`` after this run found them at most (each is decided by then
        unless its row kept changing); what still waits after that, the next run looks at. Not
        while confirmed events wait for the callback task: they go to it now."""
        store: Store | None = context.get("task_state_store")
        if at > until or store is None:
            self.log.info("Candidates still wait: the pair's next run looks at them again")
            return
        moment = datetime.fromtimestamp(at, UTC)
        self.log.info("Waiting in the triggerer until %s to look at the candidates again (watch is off)",
                      moment.isoformat(timespec="seconds"))  # fmt: skip
        store.set(WAIT_KEY, ConfirmWait(version=STATE_VERSION, tally=dict(tally), until=until))
        # Imported here: only a waiting scan needs it (40 ms of every task process's start).
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="look_again")

    def look_again(self, context: Context, event: Any = None) -> ScanOutput:
        """Back from waiting in the triggerer: look at the waiting candidates again, call back what
        is confirmed, and wait again while some still wait."""

        def resume(ctx: Context) -> ScanOutput:
            store: Store | None = ctx.get("task_state_store")
            try:
                wait = read_confirm_wait(store.get(WAIT_KEY, None) if store is not None else None)
                carried: Tally | None = read_tally(wait["tally"])
            except StateError as e:  # what it did before is not counted; its candidates are in the pair's state
                self.log.warning("The scan's wait is not readable (%s): looking once more", e)
                wait, carried = ConfirmWait(version=STATE_VERSION, tally={}, until=0.0), None
            # the position is the first part's (kept in the tally; its metrics were emitted then)
            return self._confirming(ctx, [], {}, inline=True, probe=None, carried=carried,
                                    wait_until=wait["until"])  # fmt: skip

        return self.guarded(resume, context)

    def _handed_over(self, context: Context, confirm: Confirmation) -> dict[str, list[Any]]:
        """What mapped compares of earlier runs handed over, by run. A compare still to run (its
        run still going) stays pending; one that ended without handing over (failed: a later
        run takes its ranges over; skipped) has nothing to give."""
        ti: Any = context.get("ti")
        pending = confirm.state["pending"]
        if ti is None or not pending:
            return {}
        runs: dict[str, list[Any]] = {}
        missing: dict[str, list[int]] = {}
        for run_id, indexes, _ in pending:
            if run_id == context["run_id"]:
                continue
            outputs = ti.xcom_pull(task_ids="compare", key=CONFIRM_KEY, run_id=run_id, map_indexes=indexes)
            outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
            runs[run_id] = outputs
            missing[run_id] = [i for i, out in zip(indexes, outputs, strict=False) if out is None]
        states: dict[str, Any] = {}
        if any(missing.values()):
            asked = [r for r in missing if missing[r]]
            states = ti.get_task_states(dag_id=self.dag_id, task_ids=["compare"], run_ids=asked)
        kept = []
        for run_id, indexes, since in pending:
            if run_id == context["run_id"]:
                kept.append([run_id, indexes, since])
                continue
            ended = {k: str(v).lower().rsplit(".", 1)[-1] for k, v in (states.get(run_id) or {}).items()}
            still = [i for i in missing.get(run_id, []) if ended.get(f"compare_{i}") not in _ENDED]
            if still and time.time() - since > PENDING_SECONDS:
                self.log.warning("Run %s's compare tasks %s never handed their candidates over in %d h: "
                                 "given up (a reconcile finds what they held)", run_id, still,
                                 PENDING_SECONDS // 3600)  # fmt: skip
            elif still:
                kept.append([run_id, still, since])
        confirm.state["pending"] = kept
        return runs

    def _outbox(self, context: Context, confirm: Confirmation) -> tuple[list[Event], int]:
        """Confirmed events handed to a run that never held them (its scan was killed or failed
        after deciding, or this scan waited in the triggerer before delivering them): sent again
        now; and how many are this run's (counted when it decided them). Those a run's scan
        returned are its callback's."""
        outbox = confirm.state["outbox"]
        if not outbox:
            return [], 0
        others = [r for r in outbox if r != context["run_id"]]
        held: dict[str, Any] = {}
        ti: Any = context.get("ti")
        if others and ti is not None:
            held = ti.get_task_states(dag_id=self.dag_id, task_ids=["scan"], run_ids=others)
        again: list[Event] = list(outbox.pop(context["run_id"], []))  # this run's first
        own = len(again)
        for run_id in list(outbox):  # other runs' now
            states = [str(s).lower() for s in (held.get(run_id) or {}).values()]
            if any(s.endswith("success") for s in states):
                del outbox[run_id]  # that run's callback holds them
                continue
            again += outbox.pop(run_id)
        if len(again) > own:
            self.log.warning("%d confirmed events a run did not take over are sent again", len(again) - own)
        return again, own

    def _wake_watcher(self, context: Context, at: float | None) -> None:
        """Tell the pair's watcher when to start the next look at the candidates (epoch s)."""
        name, _ = watch_asset_identity(self.pair.pair_id)
        try:
            store = context["asset_state_store"][AssetNameRef(name=name)]
        except (KeyError, TypeError):
            return  # not watched: the scan waits in the triggerer (watch off), or the next run looks
        try:
            if at is None:
                store.delete(RECHECK_AT_KEY)
            else:
                store.set(RECHECK_AT_KEY, round(at, 3))
        except Exception as e:  # the look comes with the next run the watcher starts anyway
            self.log.warning("Could not tell the watcher when to look again (%s)", type(e).__name__)

    def _deliver_inline(self, events: list[Event]) -> list[Event]:
        """The events this scan could not deliver itself (all of them with ``callbackQueue``)."""
        if not events:
            return []
        if self.config.callback_queue:  # this worker may have no way to the receivers
            self.log.info("callbackQueue=%s: the callback task sends the %d events", self.config.callback_queue,
                          len(events))  # fmt: skip
            return events
        if self.pair.des.repair is not None:  # the repair task reads the events the callback task gets
            self.log.info("repair: the callback and repair tasks take the %d events", len(events))
            return events
        from cupid_airflow.callbacks import CallbackService

        try:
            left = CallbackService(self.pair, self.log).deliver_once(events)
        except Exception as e:  # the callback's setup (a connection, its extras): the callback task's to report
            # only the type: a driver's message may quote the URL, and the callback task reports it in full
            self.log.warning("Could not send here (%s): the callback task delivers all %d events",
                             type(e).__name__, len(events))  # fmt: skip
            left = events
        if left:
            self.log.warning("%d of %d events not delivered: the callback task retries them", len(left), len(events))
        return left


class ScanInsertOperator(_ScanBase):
    """The scan of new ids alone, for a DAG built by hand (public API): returns the partitions of
    this run's claim for a mapped :class:`~cupid_airflow.operators.compare.CompareOperator`. The
    factory's DAGs run both scans in one :class:`ScanOperator`."""

    ui_color = "#d9f2e6"

    def run(self, context: Context) -> list[IdPartition]:
        return InsertPlanner(self.pair, self.variables, self.log).plan(self.scan_run(context)).partitions


class ScanUpdateOperator(_ScanBase):
    """The scan of updated rows alone, for a DAG built by hand (public API): leaves out the rows
    of the run's insert claim, which a :class:`ScanInsertOperator` before it partitions."""

    ui_color = "#d9ecf2"

    def run(self, context: Context) -> list[WindowPartition]:
        return UpdatePlanner(self.pair, self.variables, self.log).plan(self.scan_run(context)).partitions
