"""The cupid view: one page in the Airflow UI that shows every sync pair's drift at a glance.

A FastAPI app the api-server mounts at ``/cupid`` (Airflow 3.1+ plugin interface) and a nav entry
(an external view) that shows it inside the UI. ``/cupid/`` is the page, server-rendered HTML
with inline SVG charts (nothing fetched from elsewhere; one small script, :data:`LEAVE_FRAME`,
lets its links leave the UI's sandboxed frame); ``/cupid/api/pairs`` is
the same data as JSON for scripts. Airflow does not authenticate a plugin's routes: both ask for
the caller's Airflow user (the UI's session cookie, or a bearer token from ``/auth/token``),
answer 401/403 without one, and show only the DAGs that user may read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cupid_airflow.core.divergence import Divergence
from cupid_airflow.core.drift import REPAIR_WORDS
from cupid_airflow.plugins.drift_data import WINDOW, DriftPage, PairDrift, RunPoint

__all__ = ["URL_PREFIX", "create_app", "render_page"]

URL_PREFIX = "/cupid"
#: Both answers are per user and change with every run: no browser or proxy may keep them.
NO_STORE = {"Cache-Control": "no-store"}
#: Bar colours per divergence type (colour-blind safe, Okabe-Ito).
COLOURS = {Divergence.MISSING: "#d55e00", Divergence.DIFFERENT: "#e69f00", Divergence.GONE: "#7a5195"}
CHART_WIDTH, CHART_HEIGHT = 360, 84

log = logging.getLogger(__name__)


def create_app() -> Any:
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(
        title="cupid drift",
        description="Drift of every cupid sync pair: backlog, lag, divergences, callbacks.",
        docs_url=None,
        redoc_url=None,
    )

    # 401/403 without an Airflow user. A default, not an Annotated alias: with postponed
    # annotations FastAPI resolves a local alias by name in the module, and would not find it.
    user_dependency = Depends(get_user)

    @app.get("/api/pairs")
    def pairs(user: Any = user_dependency) -> JSONResponse:
        """Every sync pair the caller may read, with its figures of the last days."""
        return JSONResponse(_page(user).as_dict(), headers=NO_STORE)

    @app.get("/", response_class=HTMLResponse)
    def page(user: Any = user_dependency) -> HTMLResponse:
        return HTMLResponse(render_page(_page(user)), headers=NO_STORE)

    @app.get("/repairs/{dag_id}/{run_id}")
    def repairs(dag_id: str, run_id: str, user: Any = user_dependency) -> Any:
        """The fix SQL of one run, every repair task's file in map-index order (one script)."""
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
        from fastapi import HTTPException
        from fastapi.responses import StreamingResponse

        # the fix SQL holds rows' data, as the run's XComs do: the same permission
        if not get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.XCOM, details=DagDetails(id=dag_id), user=user
        ):
            raise HTTPException(404, "no such cupid run")
        files = _repair_files(dag_id, run_id)
        if not files:
            raise HTTPException(404, "this run wrote no fix SQL that this api-server can read")
        name = f"{dag_id}-{run_id}.sql".replace('"', "_")
        return StreamingResponse(
            _stream(files), media_type="application/sql",
            headers={**NO_STORE, "Content-Disposition": f'inline; filename="{name}"'},
        )  # fmt: skip

    return app


def _page(user: Any) -> DriftPage:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.utils.session import create_session

    from cupid_airflow.plugins.drift_data import load_page

    allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
    with create_session() as session:
        return load_page(session, allowed)


def _repair_files(dag_id: str, run_id: str) -> list[Path]:
    """The fix SQL files the run's repair tasks recorded (their tallies' ``script``), only where a
    path is what cupid writes for that run (``.../<dag_id>/<run_id>/repair-NNNN.sql``, the ids as
    :func:`~cupid_airflow.names.path_part` makes them): anyone who may edit XComs may write a
    tally, and must not make this serve another file."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from cupid_airflow.core.tally import TALLY_KEY
    from cupid_airflow.names import path_part

    with create_session() as session:
        rows = session.execute(
            select(XComModel.map_index, XComModel.value).where(
                XComModel.key == TALLY_KEY, XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                XComModel.task_id == "repair",
            )
        ).all()  # fmt: skip
    files: list[Path] = []
    for _, value in sorted(rows, key=lambda row: row[0]):
        with suppress(ValueError, TypeError):
            record = json.loads(value) if isinstance(value, str) else value
            script = record.get("script") if isinstance(record, dict) else None
            path = Path(script) if isinstance(script, str) else None
            if (
                path is not None and path.is_absolute() and ".." not in path.parts
                and re.fullmatch(r"repair-\d{4}\.sql", path.name)
                and path.parent.name == path_part(run_id) and path.parent.parent.name == path_part(dag_id)
                and path.is_file() and path.resolve() == path  # no symlink on the way
            ):  # fmt: skip
                files.append(path)
    return files


def _stream(files: list[Path]) -> Iterator[bytes]:
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 16):
                yield chunk


# ---------------------------------------------------------------------------- rendering


def _n(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _dag_link(dag_id: str, run_id: str | None = None, task: tuple[str, int] | None = None) -> str:
    """A link into Airflow's own UI, relative to this page (``<base>/cupid/``), so it works
    under any base URL; ``_top`` leaves the nav's frame."""
    url = f"../dags/{quote(dag_id, safe='')}"
    if run_id is not None:
        url += f"/runs/{quote(run_id, safe='')}"
    if task is not None:
        url += f"/tasks/{quote(task[0], safe='')}"
        if task[1] >= 0:
            url += f"/mapped/{task[1]}"
    return url


def _repairs_link(dag_id: str, run_id: str) -> str:
    """This app's own route (relative to ``<base>/cupid/``): the run's fix SQL."""
    return f"repairs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


def _repairs(repairs: Any) -> str:
    """A pair's repairs of the window, under its callbacks (nothing for a pair that does not repair)."""
    if not repairs:
        return ""
    parts = [f"{repairs.get(key, 0):,} {escape(REPAIR_WORDS[key])}" for key in ("repaired", "skipped")]
    for key in ("repair_failed", "awaiting", "held", "rejected"):
        if repairs.get(key):
            parts.append(f'<span class="failed bad">{repairs[key]:,}</span> {escape(REPAIR_WORDS[key])}')
    return f'<div class="repairs">repairs: {" · ".join(parts)}</div>'


def _a(url: str, text: str) -> str:
    return f'<a href="{escape(url)}" target="_top">{escape(text)}</a>'


def chart(runs: list[RunPoint]) -> str:
    """Divergences per run, stacked by type, oldest run left, the first and last run's dates
    below: an SVG a browser draws as it is. A type a run found is at least 3 px high, however
    small next to the largest run."""
    width, plot = CHART_WIDTH, CHART_HEIGHT - 12
    top = max((r.figures.divergences for r in runs), default=0)
    slot = width / max(len(runs), 1)
    bar = max(1.0, slot * 0.8)
    shapes: list[str] = []
    for i, run in enumerate(runs):
        x, y = i * slot, float(plot)
        title = f"{run.run_id} ({run.state}): " + ", ".join(
            f"{run.figures.found.get(kind.key, 0):,} {kind.label}" for kind in Divergence
        )
        parts = []
        for kind, colour in COLOURS.items():
            count = run.figures.found.get(kind.key, 0)
            if not count:
                continue
            h = max(3.0, plot * count / top)
            y = max(0.0, y - h)
            parts.append(_rect(f"bar t{kind.key}", x, y, bar, h, colour))
        if not parts:  # a run that found nothing: a grey tick on the baseline
            parts.append(_rect("bar t0", x, plot - 2, bar, 2, "#bbb"))
        shapes.append(f"<g><title>{escape(title)}</title>{''.join(parts)}</g>")
    labels = f'<text x="{width - 2}" y="10" text-anchor="end" class="axis">max {top:,}/run</text>' if top else ""
    if runs:
        first, last = runs[0].when.strftime("%m-%d %H:%M"), runs[-1].when.strftime("%m-%d %H:%M")
        labels += f'<text x="0" y="{CHART_HEIGHT - 1}" class="axis">{first}</text>'
        labels += f'<text x="{width}" y="{CHART_HEIGHT - 1}" text-anchor="end" class="axis">{last}</text>'
    return (
        f'<svg class="chart" role="img" aria-label="divergences per run" width="{width}" height="{CHART_HEIGHT}" '
        f'viewBox="0 0 {width} {CHART_HEIGHT}">{"".join(shapes)}{labels}</svg>'
    )


def _rect(css: str, x: float, y: float, width: float, height: float, colour: str) -> str:
    return f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{colour}"/>'


def _found(found: dict[str, int] | Any) -> str:
    cells = []
    for kind in Divergence:
        k, name, count = kind.key, kind.label, found.get(kind.key, 0)
        cells.append(f'<span class="t t{k}" data-type="{k}" title="type {k}: {name}">{count:,} {name}</span>')
    return " · ".join(cells)


def _confirming(pair: PairDrift, totals: Any) -> str:
    """Candidates waiting (hot ones apart), what the window confirmed and cleared in flight, and
    the destination's lag the pair has learnt."""
    last = pair.confirming
    if last is None and not totals.candidates:
        return "–"
    waiting = "–" if last is None or last.waiting is None else f"{last.waiting:,}"
    hot = f' <span class="hot bad">({last.hot:,} hot)</span>' if last is not None and last.hot else ""
    lag = "unknown" if last is None or last.lag is None else _ago(last.lag)
    return (
        f'<span class="waiting-candidates">{waiting}</span> waiting{hot}<br>'
        f'<span class="confirmed">{totals.divergences:,}</span> confirmed · '
        f'<span class="cleared">{totals.cleared:,}</span> cleared in flight<br>'
        f'<small>replica lag <span class="learnt-lag">{lag}</span></small>'
    )


def _unreadable(count: int) -> str:
    if not count:
        return ""
    return f'<div class="unreadable bad">{count:,} task record(s) unreadable, not counted</div>'


def _pair_row(pair: PairDrift, now: datetime) -> str:
    totals = pair.totals()
    waiting, failed = pair.undelivered(waiting=True), pair.undelivered(waiting=False)
    last = pair.last_run
    reasons = pair.drift_reasons()
    drifting = bool(reasons)
    status = f"drifting: {escape('; '.join(reasons))}" if drifting else "in sync"
    last_html = "no run in the last days"
    if last is not None:
        state = escape(last.state)
        last_html = f'{_a(_dag_link(pair.dag_id, last.run_id), last.run_id)} <span class="state {state}">{state}</span>'
        if last.problems:
            links = ", ".join(
                _a(_dag_link(pair.dag_id, last.run_id, p), p[0] if p[1] < 0 else f"{p[0]}[{p[1]}]")
                for p in last.problems
            )
            last_html += f'<div class="problems">failed or retrying: {links}</div>'
    reconcile = "–"
    if pair.reconcile_dag_id is not None:
        reconcile = _a(_dag_link(pair.reconcile_dag_id), "not run yet")
        if pair.reconcile is not None:
            reconcile = (
                f"{_found(pair.reconcile.figures.found)}<br>"
                f"{_a(_dag_link(pair.reconcile_dag_id, pair.reconcile.run_id), pair.reconcile.run_id)}"
            )
    backlog = (
        f'<b class="backlog">{_n(pair.backlog)}</b> ids<br>'
        f"<small>cursor {_n(pair.cursor)} of max id {_n(pair.max_id)}</small>"
    )
    lag_s = pair.lag_seconds(now)
    lag = "–"
    if lag_s is not None and pair.until is not None:
        mark = escape(pair.until.isoformat(timespec="seconds"))
        lag = f'<b class="lag">{_ago(lag_s)}</b><br><small>mark {mark}</small>'
    callbacks = (
        f'<span class="delivered">{totals.delivered:,}</span> delivered<br>'
        f'<span class="waiting{" bad" if waiting else ""}">{waiting:,}</span> waiting · '
        f'<span class="failed{" bad" if failed else ""}">{failed:,}</span> failed'
    )
    callbacks += _repairs(totals.repairs)
    if last is not None and last.figures.scripts:
        last_html += f"<div>{_a(_repairs_link(pair.dag_id, last.run_id), 'fix SQL')}</div>"
    if pair.reconcile is not None and pair.reconcile.figures.scripts and pair.reconcile_dag_id is not None:
        reconcile += f"<br>{_a(_repairs_link(pair.reconcile_dag_id, pair.reconcile.run_id), 'fix SQL')}"
    paused = " <small>(paused)</small>" if pair.paused else ""
    return f"""
<tr class="pair {"drifting" if drifting else "ok"}" data-dag-id="{escape(pair.dag_id)}">
  <td><div class="dag">{_a(_dag_link(pair.dag_id), pair.dag_id)}{paused}</div>
      <div class="tables">{escape(pair.src)} → {escape(pair.des)}</div>
      <small>{escape(pair.config)}</small> <span class="status">{status}</span></td>
  <td>{backlog}</td>
  <td>{lag}</td>
  <td>{chart(pair.runs)}<div class="found">{_found(totals.found)}</div>
      <small>{len(pair.runs):,} runs, {totals.rows:,} rows compared</small>{_unreadable(totals.unreadable)}</td>
  <td>{_confirming(pair, totals)}</td>
  <td>{callbacks}</td>
  <td>{reconcile}</td>
  <td>{last_html}</td>
</tr>"""


def _guarded_row(pair: PairDrift, now: datetime) -> str:
    """A pair's row, or a row that says it cannot be shown: one pair never takes the page down."""
    try:
        return _pair_row(pair, now)
    except Exception:
        log.exception("cupid view: cannot show pair %s", pair.dag_id)
        link = _a(_dag_link(pair.dag_id), pair.dag_id)
        return (
            f'<tr class="pair drifting" data-dag-id="{escape(pair.dag_id)}"><td>{link}</td><td colspan="7" '
            'class="bad">this pair\'s figures cannot be shown: see the api-server log</td></tr>'
        )


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1a202c;font-size:14px}
h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin-bottom:12px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e2e8f0;padding:8px;vertical-align:top;text-align:left}
th{font-size:12px;color:#4a5568;text-transform:uppercase;letter-spacing:.03em}
tr.drifting td:first-child{border-left:4px solid #d55e00} tr.ok td:first-child{border-left:4px solid #38a169}
.dag{font-weight:600} .tables{font-family:ui-monospace,monospace;font-size:12px} small{color:#555}
.status{font-size:11px;padding:1px 6px;border-radius:8px;background:#edf2f7}
tr.drifting .status{background:#fde3d3;color:#8a2e00} .bad{color:#c53030;font-weight:700}
.t1{color:#b04a00} .t2{color:#9a6b00} .t3{color:#7a5195} .axis{font-size:10px;fill:#666}
.state{font-size:11px;padding:1px 6px;border-radius:8px;background:#edf2f7}
.state.failed{background:#fed7d7;color:#9b2c2c} .state.success{background:#c6f6d5;color:#22543d}
.problems{font-size:12px;margin-top:4px}
.broken{background:#fff5f5;border:1px solid #feb2b2;padding:8px 12px;margin:12px 0}
.legend span{margin-right:12px} .legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
a{color:#2b6cb0}
"""


#: The UI frames the page in a sandbox without ``allow-top-navigation``: a link's ``_top`` is
#: refused there. The sandbox keeps the page same-origin, so a click is replayed as a link in the
#: UI's own document, which navigates it. Opened directly (``/cupid/``), links work as they are.
LEAVE_FRAME = """
if (window.top !== window) {
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[href]");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    try {
      const ui = window.top.document, replay = ui.createElement("a");
      replay.href = link.href;
      ui.body.appendChild(replay);
      replay.click();
      replay.remove();
      event.preventDefault();
    } catch (error) {}  // not same-origin after all: the browser decides
  });
}
"""


def render_page(page: DriftPage) -> str:
    drifting = [p for p in page.pairs if p.drift_reasons()]
    broken = ""
    if page.broken:
        items = "".join(
            f'<li class="broken-config">{_a(_dag_link(b.dag_id), b.config or b.dag_id)}: {escape(b.error)}</li>'
            for b in page.broken
        )
        count = len(page.broken)
        broken = f'<div class="broken"><b>{count} broken config(s)</b>: their DAGs do not run.<ul>{items}</ul></div>'
    legend = "".join(f'<span><i style="background:{c}"></i>type {k.key}: {k.label}</span>' for k, c in COLOURS.items())
    rows = "".join(_guarded_row(p, page.now) for p in page.pairs) or '<tr><td colspan="8">No cupid pairs yet.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cupid drift</title><style>{STYLE}</style></head>
<body>
<h1>cupid: drift of every sync pair</h1>
<div class="sub"><span id="summary">{len(page.pairs)} pairs, <b>{len(drifting)} drifting</b></span>
 · the last {WINDOW.days} days · as of {page.now.strftime("%Y-%m-%d %H:%M:%S")} UTC
 · <span class="legend">{legend}</span></div>
{broken}
<table id="pairs">
<thead><tr><th>Pair</th><th>Backlog (new ids)</th><th>Update lag</th><th>Divergences per run</th>
<th>Confirming</th><th>Callbacks</th><th>Last reconcile</th><th>Last run</th></tr></thead>
<tbody>{rows}</tbody></table>
<script>{LEAVE_FRAME}</script>
</body></html>"""
