"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A runtime with a dashboard and steady load runs on its own loop in a thread;
the test opens its page, checks that nothing was logged as an error, that the
charts refresh as snapshots arrive (``<body data-updates>``, which the page
increments on each refresh, and the canvas pixels), and saves a screenshot to
``test-artifacts/dashboard.png``. A bare server over an empty registry is
opened too: the page must work with nothing to show.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncperf as ap
from asyncperf.observability._metrics import Metrics
from asyncperf.observability._server import DashboardServer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every chart of the page (the ids are chart-NAME).
CHARTS = ("throughput", "latency", "queues", "workers", "cache", "gc", "lag", "shed", "memory")
# Seconds Playwright waits for a condition (a refresh comes once a second).
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: run scripts/install-test-services.sh (Debian's chromium)",
)

# JavaScript: whether <body data-NAME> has reached a number. A function, not an expression:
# the page's Content-Security-Policy forbids eval(), which an expression would need.
AT_LEAST = "([name, least]) => Number(document.body.dataset[name]) >= least"
# JavaScript: pixels of a canvas that differ from its background, and a digest of them.
CANVAS_INK = """(id) => {
  const canvas = document.getElementById(id);
  // Read a copy made for reading (reading the page's own canvas would make Chromium warn).
  const copy = document.createElement("canvas");
  copy.width = canvas.width;
  copy.height = canvas.height;
  const context = copy.getContext("2d", {willReadFrequently: true});
  context.drawImage(canvas, 0, 0);
  const data = context.getImageData(0, 0, copy.width, copy.height).data;
  const [r, g, b] = [data[0], data[1], data[2]];
  let ink = 0;
  let digest = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] !== r || data[i + 1] !== g || data[i + 2] !== b) {
      ink += 1;
      digest = (digest * 31 + data[i] + 7 * data[i + 1] + 13 * data[i + 2] + i) % 1000000007;
    }
  }
  return {ink, digest, points: Number(canvas.dataset.points || 0)};
}"""


async def _serve(urls: concurrent.futures.Future[tuple[str, str]], stop: asyncio.Event) -> None:
    """A runtime with a dashboard under steady load, and a bare server with nothing in it.

    The load starts once the supervisor has made its first decision (shrinking
    the idle pool after its hold-down), so the page has a decision to list.
    """
    runtime = ap.Runtime(
        dashboard=True, max_workers=4, tick=0.05, hold_down=0.1, window=2, limiter="aimd"
    )

    @runtime.handler(cache_ttl=30.0)
    async def lookup(key: int) -> int:
        await asyncio.sleep(0.002)
        return key

    @runtime.handler(priority=2)
    async def batch(key: int) -> int:
        await asyncio.sleep(0.005)
        return key

    async def caller(seed: int) -> None:
        key = seed
        while not stop.is_set():
            key = (key * 7 + 3) % 50
            await lookup(key)
            await batch(key)

    empty = Metrics()
    try:
        async with runtime, DashboardServer(empty) as bare:
            assert runtime.dashboard_url is not None
            assert runtime.supervisor is not None
            decided = asyncio.Event()
            runtime.supervisor.add_listener(lambda _event: decided.set())
            await decided.wait()
            callers = [asyncio.create_task(caller(seed)) for seed in range(8)]
            urls.set_result((runtime.dashboard_url, bare.url))
            await stop.wait()
            for task in callers:
                task.cancel()
            await asyncio.gather(*callers, return_exceptions=True)
    finally:
        empty.close()


@contextlib.contextmanager
def serving() -> Iterator[tuple[str, str]]:
    """Run :func:`_serve` on its own loop in a thread; yields the two pages' URLs."""
    urls: concurrent.futures.Future[tuple[str, str]] = concurrent.futures.Future()
    loops: list[asyncio.AbstractEventLoop] = []
    stop_box: list[asyncio.Event] = []
    failure: list[BaseException] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        stop_box.append(asyncio.Event())
        await _serve(urls, stop_box[0])

    def target() -> None:
        try:
            ap.run(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            if not urls.done():
                urls.set_exception(exc)

    thread = threading.Thread(target=target, name="dashboard-runtime", daemon=True)
    thread.start()
    try:
        yield urls.result(timeout=20)
    finally:
        if loops and stop_box:
            loops[0].call_soon_threadsafe(stop_box[0].set)
        thread.join(timeout=20)
    assert not thread.is_alive(), "the runtime's thread did not stop"
    assert not failure, failure


def test_dashboard_page_in_chromium() -> None:
    from playwright.sync_api import ConsoleMessage, Error, sync_playwright

    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    def on_page_error(error: Error) -> None:
        problems.append(f"page error: {error}")

    with serving() as (url, empty_url), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))

            page.goto(url)
            page.wait_for_function(AT_LEAST, arg=["updates", 1], timeout=WAIT_MS)
            first_seq = int(page.get_attribute("body", "data-seq") or "0")
            first = page.evaluate(CANVAS_INK, "chart-workers")
            # Two more snapshots arrive over the event stream, about a second apart.
            page.wait_for_function(AT_LEAST, arg=["seq", first_seq + 2], timeout=WAIT_MS)
            later: dict[str, Any] = {
                name: page.evaluate(CANVAS_INK, f"chart-{name}") for name in CHARTS
            }
            assert page.text_content("#status") == "live (one update a second)"
            assert page.text_content("#fact-loop") in ("asyncio", "uvloop")
            reasons = page.locator("#decisions tr td:nth-child(5)").all_text_contents()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The empty registry: no pools, no queues, no cache; the page still runs.
            empty = browser.new_page(viewport={"width": 1000, "height": 800})
            empty.on("console", on_console)
            empty.on("pageerror", on_page_error)
            empty.goto(empty_url)
            empty.wait_for_function(AT_LEAST, arg=["updates", 2], timeout=WAIT_MS)
            empty_throughput = empty.evaluate(CANVAS_INK, "chart-throughput")
            empty_lag = empty.evaluate(CANVAS_INK, "chart-lag")
        finally:
            browser.close()

    assert problems == []
    # The charts moved: more points than at the first refresh, and different pixels.
    assert later["workers"]["points"] > first["points"] > 0
    assert later["workers"]["digest"] != first["digest"]
    for name, ink in later.items():
        assert ink["ink"] > 500, f"chart {name} looks blank: {ink}"
        assert ink["points"] > 0, f"chart {name} has no data: {ink}"
    assert reasons, "no supervisor decision listed"
    assert all(reasons), f"a decision without its reason: {reasons}"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    assert empty_throughput["points"] == 0  # nothing to draw: "no data yet"
    assert empty_throughput["ink"] > 0  # the grid and the note are drawn
    assert empty_lag["points"] == 0  # a bare registry has no lag monitor
