"""`qslab monitor` in a real browser (Debian's headless Chromium driven by Playwright) during a bench session.

The bench runs in its own process and can hold chosen messages (tests/station/gated_bench.py). Before the session
starts, the test arms holds at counted messages: the laser's part of the settings check after batch 2, then after
batch 3. Each stops the session inside that check, whatever the speeds: batch 1 (then 2) handed to the writer, the
next one not. The append still in flight then commits, no other can, so the file comes to hold exactly 10 (then 20)
images and the page must come to show exactly that. Between two holds the numbers change; after the session the
page's numbers, the monitor's own (computed from the file) and the final report's, equal the session's `--json`. A
screenshot checks that every plot drew its glyphs. Nothing depends on speed: every wait polls until a generous
deadline (a hang guard, never a timing assumption) and fails naming what did not happen.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from held_bench import HANG_GUARD_S, SETTINGS_CHECK, GatedBench, Lines, images_committed


ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "lab_config.toml"
CHROMIUM = Path("/usr/bin/chromium")
BATCH_IMAGES = 10
BATCHES = 3
STOPS = (1, 2)  # batches recorded at each stop: held in the check after batch 2, then after batch 3
PAGE_DEADLINE_S = 180.0
PLOT_COLORS = {"accuracy": (0x1F, 0x77, 0xB4), "estimate": (0x2C, 0xA0, 0x2C), "limit": (0xD6, 0x27, 0x28),
               "spent": (0x94, 0x67, 0xBD), "batch": (0x8C, 0x56, 0x4B)}  # sequences/monitor/page.py COLORS


def require_browser():
    """Playwright and Debian's chromium; their absence fails the test with one line (CI installs both)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); "
                    ".ci/run does it", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'", pytrace=False)
    return sync_playwright


def qslab(*argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qslab.sequences.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def value(page, key: str) -> str | None:
    locator = page.locator(f'[data-key="{key}"]')
    return locator.first.get_attribute("data-value") if locator.count() else None


def wait_for_value(page, key: str, expected: str) -> None:
    """Until the page shows ``expected`` under ``key`` (the poller and the page refresh on their own)."""
    deadline = time.monotonic() + PAGE_DEADLINE_S
    while (seen := value(page, key)) != expected:
        if time.monotonic() > deadline:
            shown = page.locator('[data-key="error"]')
            error = f" (its error line: {shown.first.inner_text()!r})" if shown.count() else ""
            raise AssertionError(f"the page shows {key} = {seen!r}, never {expected!r}{error}")
        page.wait_for_timeout(100)


def numbers(page, keys) -> dict[str, float | bool | None]:
    """The exact values (their repr in data-value) the page shows under ``keys``."""
    found = {}
    for key in keys:
        text = value(page, key)
        found[key] = {None: None, "": None, "True": True, "False": False}.get(text, None) if text in (
            None, "", "True", "False") else float(text)
    return found


def glyph_pixels(png: bytes) -> dict[str, int]:
    """Pixels of each plot colour in a screenshot (anti-aliasing aside: within 12 of the colour on each channel)."""
    import io

    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return {name: int(np.sum(np.all(np.abs(image - np.array(rgb)) <= 12, axis=-1))) for name, rgb in PLOT_COLORS.items()}


@pytest.fixture
def bench():
    served = GatedBench()
    yield served
    served.stop()  # releases whatever it still holds


def test_the_page_follows_a_bench_session_and_ends_on_its_final_numbers(bench, tmp_path, calibrated_store_at):
    sync_playwright = require_browser()
    calibrations = calibrated_store_at(tmp_path / "calibration")  # the bench's records (tests/conftest.py)
    out = tmp_path / "sessions"
    out.mkdir()
    monitor = qslab("monitor", str(out), "--port", "0", "--refresh", "0.2", "--analysis-interval", "0")
    session = None
    try:
        url = re.search(r"http://\S+/", Lines(monitor.stdout).wait_for(r"watching .* at http://")).group(0)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(url)
            page.locator('[data-key="waiting"]').first.wait_for(timeout=PAGE_DEADLINE_S * 1000)  # no session yet

            for recorded in STOPS:  # armed before the session exists: nothing to race
                bench.hold_at(recorded + 2, SETTINGS_CHECK)
            session = qslab("session", "--config", str(bench.config(tmp_path)), "--json", "--images",
                            str(BATCHES * BATCH_IMAGES), "--batch-images", str(BATCH_IMAGES), "--seed", "3", "--out",
                            str(out), "--calibration-dir", str(calibrations))
            seen = []
            for recorded in STOPS:
                assert bench.wait_held(session, f"the settings check after batch {recorded + 1}").startswith(
                    "held laser ")
                # the append in flight (batch `recorded`) commits while the session is held; the next cannot
                held = images_committed(out, session, recorded * BATCH_IMAGES, poll_s=0.05)
                assert held == recorded * BATCH_IMAGES, f"held after batch {recorded + 1}, the file has {held} images"
                wait_for_value(page, "images_done", repr(held))
                wait_for_value(page, "analysed_images", repr(held))
                assert value(page, "status") == "running"
                assert value(page, "batches_done") == repr(recorded) and value(page, "batches_total") == repr(BATCHES)
                seen.append(held)
                if len(seen) == 1:
                    first = numbers(page, ["accuracy", "transmittance_hat", "leakage_spent"])
                    assert value(page, "laser.port1.power_dbm") == "10.0"  # the station's readings, from the stream
                    assert float(value(page, "attenuator.att1.attenuation_db")) > 0
                    assert value(page, "digitizer.ch1.range") not in (None, "")
                    assert page.locator('[data-key^="expiry."]').count() >= 6  # the records in use, with expiry
                else:
                    page.screenshot(full_page=True, path=str(tmp_path / "monitor-running.png"))
                bench.release()
            assert seen[1] > seen[0]
            assert numbers(page, ["leakage_spent"])["leakage_spent"] > first["leakage_spent"]  # it grew while running

            code = session.wait(timeout=HANG_GUARD_S)
            final = json.loads(session.stdout.read().strip().splitlines()[-1])
            assert code == 0, final
            wait_for_value(page, "status", "complete")
            wait_for_value(page, "analysed_images", repr(BATCHES * BATCH_IMAGES))
            page.locator('[data-key="final_report"]').first.wait_for(timeout=PAGE_DEADLINE_S * 1000)
            assert value(page, "run_id") == final["run_id"]
            verification = final["verification"]
            weight = final["security_report"]["weight_leakage"]
            expected = {"accuracy": final["accuracy"], "correct": final["correct"],
                        "accuracy_ci_low": final["accuracy_ci95"][0], "accuracy_ci_high": final["accuracy_ci95"][1],
                        "verified": final["verified"], "leakage_per_query": weight["per_query_bits_per_mode"],
                        "leakage_spent": weight["cumulative_bits_per_mode"],
                        **{name: verification[name] for name in ("transmittance_hat", "transmittance_min",
                                                                 "excess_noise_hat_snu", "excess_noise_max_snu")}}
            live = numbers(page, expected)  # the monitor's own numbers, from the file
            assert live.pop("verified") is expected.pop("verified") is True
            assert live == pytest.approx(expected, rel=1e-12, abs=0.0)
            reported = numbers(page, [f"final.{key}" for key in ("accuracy", "transmittance_min", "excess_noise_max_snu",
                                                                  "leakage_cumulative", "verified")])
            assert reported == {"final.accuracy": final["accuracy"],
                                "final.transmittance_min": verification["transmittance_min"],
                                "final.excess_noise_max_snu": verification["excess_noise_max_snu"],
                                "final.leakage_cumulative": weight["cumulative_bits_per_mode"],
                                "final.verified": final["verified"]}
            assert f"{final['run_id']}" in page.locator('[data-key="final_report"]').first.inner_text()

            # the plots drew their glyphs: lines and points of every series, the batch-time bars
            page.wait_for_timeout(500)
            png = page.screenshot(full_page=True, path=str(tmp_path / "monitor-final.png"))
            pixels = glyph_pixels(png)
            assert all(count >= 300 for count in pixels.values()), pixels
            browser.close()
    finally:
        bench.stop()  # a session still held goes on (and ends, or is ended below)
        for process in (session, monitor):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=HANG_GUARD_S)
    keep = os.environ.get("QSLAB_MONITOR_SCREENSHOTS")  # a directory: keep the screenshots for a person to look at
    if keep:
        for name in ("monitor-running.png", "monitor-final.png"):
            (Path(keep) / name).write_bytes((tmp_path / name).read_bytes())
