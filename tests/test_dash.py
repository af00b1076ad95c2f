"""`evgrid dash` in a real browser: Debian's headless Chromium driven by Playwright against the served page.

The page must load with no console error, Step must advance the clock and the KPIs, switching the mechanism must
change the price curve, with the attack on the detector panel must appear, Run must redraw the page while it plays
(the visible clock moves on at least twice before the run ends) and Pause must stop it. Screenshots are saved to
``tests/artifacts/dash.png`` (paused) and ``dash-running.png`` (while running). Skipped (with the reason) only where Chromium is not
installed and this is not CI; ``.ci/run`` installs it, and under CI a missing browser fails the test.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
N_EVS = 120
START_S = 90.0  # bounded wait for the server [s]
UI_MS = 60_000  # bounded wait for the page [ms]
N_STEPS = 96  # market steps of the default day
RUN_WATCH_S = 30.0  # how long Run may take to show two more steps on the page [s]
PAUSE_MS = 15_000  # bounded wait for Pause to take effect [ms]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run must install Debian's chromium", pytrace=False)
    pytest.skip(
        f"{CHROMIUM} not installed (apt-get install chromium; .ci/run does this in CI)", allow_module_level=True
    )

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    port = _free_port()
    evgrid = Path(sys.executable).parent / "evgrid"
    log = ARTIFACTS / "dash-server.log"
    ARTIFACTS.mkdir(exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(evgrid), "dash", "default", "--port", str(port), "--set", f"fleet.n_evs={N_EVS}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + START_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"evgrid dash exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"evgrid dash did not answer on {url} within {START_S:.0f} s: {log.read_text()[-2000:]}"
                    )
                time.sleep(0.5)
            assert f"http://127.0.0.1:{port}/" in log.read_text()  # the command prints its URL
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _step(page: Page) -> int:
    return int(page.locator(".evgrid-clock").get_attribute("data-step") or -1)


def _clock_step(page: Page) -> int:
    """The step the visible clock ("step k / N · hh:mm") shows."""
    text = page.locator(".evgrid-clock .evgrid-step").inner_text()
    m = re.match(r"step (\d+) / \d+", text)
    assert m, f"clock reads {text!r}"
    return int(m.group(1))


def _kpi(page: Page, key: str) -> str:
    return page.locator(f'tr[data-kpi="{key}"] .kpi-value').inner_text()


def _press_step(page: Page, n: int = 1) -> None:
    for _ in range(n):
        before = _step(page)
        page.get_by_role("button", name="Step", exact=True).click()
        expect(page.locator(".evgrid-clock")).to_have_attribute("data-step", str(before + 1), timeout=UI_MS)


def _mechanism(page: Page, name: str) -> None:
    page.locator(".evgrid-mechanism").get_by_role("button", name=name, exact=True).click()
    expect(page.locator(".evgrid-clock")).to_contain_text(f"· {name} ·", timeout=UI_MS)
    expect(page.locator(".evgrid-clock")).to_have_attribute("data-step", "0", timeout=UI_MS)


@pytest.mark.slow
def test_dash_in_chromium(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))
    page.goto(server, timeout=UI_MS)
    expect(page.locator(".evgrid-clock")).to_contain_text("elasticity-dr", timeout=UI_MS)
    assert _step(page) == 0
    expect(page.locator(".evgrid-feeder img")).to_be_visible(timeout=UI_MS)

    # Step advances the clock and the KPIs
    _press_step(page)
    expect(page.locator(".evgrid-clock")).to_contain_text("step 1 / 96 · 12:00")
    losses_1 = _kpi(page, "energy_losses_kwh")
    _press_step(page, 2)
    expect(page.locator(".evgrid-clock")).to_contain_text("step 3 / 96 · 12:30")
    assert _kpi(page, "steps") == "3 / 96"
    assert float(_kpi(page, "energy_losses_kwh").replace(",", "")) > float(losses_1.replace(",", "")) > 0

    # switching the mechanism changes the price curve (and only the mechanism: back again, the same curve)
    price_dr = _kpi(page, "mean_price_usd_per_mwh")
    _mechanism(page, "qubo-rtp")
    _press_step(page, 3)
    price_rtp = _kpi(page, "mean_price_usd_per_mwh")
    assert price_rtp != price_dr
    _mechanism(page, "elasticity-dr")
    _press_step(page, 3)
    assert _kpi(page, "mean_price_usd_per_mwh") == price_dr

    # attack on: the detector panel with its threshold; Run / Pause drive the model
    page.locator("label", has_text="attack on").click()
    expect(page.locator(".evgrid-clock")).to_contain_text("attack on", timeout=UI_MS)
    expect(page.locator(".evgrid-detector img")).to_be_visible(timeout=UI_MS)
    _press_step(page, 40)  # into the evening: attacked steps, queues
    assert int(_kpi(page, "attack_steps")) > 0

    # Run redraws the page while it plays: the clock on the page moves on at least twice before the run ends
    seen = [_clock_step(page)]
    page.get_by_role("button", name="Run", exact=True).click()
    deadline = time.monotonic() + RUN_WATCH_S
    while len(set(seen)) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
        seen.append(_clock_step(page))
    moved = sorted(set(seen))
    assert len(moved) >= 3 and moved[-1] < N_STEPS, (
        f"while Run played, the clock showed steps {moved} within {RUN_WATCH_S:.0f} s: "
        "the page is not redrawn step by step (or the run ended first)"
    )
    page.screenshot(path=str(ARTIFACTS / "dash-running.png"), full_page=True)
    # Pause answers within one frame, and the clock stops
    page.get_by_role("button", name="Pause", exact=True).click(timeout=PAUSE_MS)
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible(timeout=PAUSE_MS)
    paused_at = _clock_step(page)
    page.wait_for_timeout(3000)
    assert _clock_step(page) == paused_at < N_STEPS, "the clock moved on after Pause"
    assert _step(page) == paused_at
    expect(page.locator(".evgrid-clock")).to_contain_text(re.compile(r"step \d+ / 96"))

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dash.png"), full_page=True)
    assert not errors, "\n".join(errors)
    page.close()
