"""The cupid view in a real browser: Debian's headless Chromium, driven by Playwright, logged in
to a real api-server the way the UI logs in (the ``_token`` cookie of the simple auth manager).

Playwright's Python package brings only its driver: the browser is the system's
(``apt-get install chromium``; .ci/run installs it), so nothing is downloaded at test time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["ViewPage", "logged_in", "open_view", "screenshot_page"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium not found: apt-get install chromium (.ci/run does)")
    return path


@dataclass
class ViewPage:
    """What the browser saw of the cupid view, inside the Airflow UI's frame."""

    rows: dict[str, str]  # dag id -> the row's text
    chart_bars: dict[str, int]  # dag id -> painted bars (rect with a width and height) in its chart
    broken: list[str]  # the broken configs' lines
    summary: str
    html: str
    followed: str = ""  # the UI's URL after clicking the first pair's DAG link in the frame


@contextmanager
def logged_in(base_url: str, token: str) -> Iterator[Page]:
    """A page of headless Chromium holding the UI's login cookie for ``base_url``."""
    from playwright.sync_api import sync_playwright

    host = urlsplit(base_url).hostname or "127.0.0.1"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            context.add_cookies([{"name": "_token", "value": token, "domain": host, "path": "/"}])
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def screenshot_page(base_url: str, token: str, path: str, screenshot: Path, wait_for: str = "body") -> None:
    """A logged-in screenshot of one page of the Airflow UI (``path`` below ``base_url``)."""
    with logged_in(base_url, token) as page:
        page.goto(f"{base_url}/{path.lstrip('/')}")
        page.locator(wait_for).first.wait_for()
        page.wait_for_load_state("networkidle")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))


def open_view(base_url: str, token: str, screenshot: Path | None = None) -> ViewPage:
    """Open the nav entry ``/plugin/cupid-drift`` as a logged-in user and read the framed page."""
    with logged_in(base_url, token) as page:
        page.goto(f"{base_url}/plugin/cupid-drift")
        frame = page.frame_locator("iframe").first
        frame.locator("table#pairs").wait_for()
        rows: dict[str, str] = {}
        bars: dict[str, int] = {}
        for row in frame.locator("tr.pair").all():
            dag_id = row.get_attribute("data-dag-id") or ""
            rows[dag_id] = row.inner_text()
            # painted: the browser laid the bar out with a real size
            bars[dag_id] = row.locator("svg.chart rect").evaluate_all(
                "rects => rects.filter(r => { const b = r.getBBox(); return b.width > 0 && b.height > 0 }).length"
            )
        broken = [li.inner_text() for li in frame.locator("li.broken-config").all()]
        summary = frame.locator("#summary").inner_text()
        html = frame.locator("html").inner_html()
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=False)
        followed = ""
        if rows:  # a link leaves the nav's sandboxed frame and opens the DAG in the UI itself
            frame.locator("tr.pair .dag a").first.click()
            page.wait_for_url("**/dags/**")
            followed = page.url
        return ViewPage(rows, bars, broken, summary, html, followed)
