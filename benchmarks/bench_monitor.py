"""The session's time per batch with and without `qslab monitor` watching, and the monitor's refresh timings.

Runs `qslab session` on the embedded bench (calibration records prepared once and reused) alternately without
and with a monitor whose page is open in headless Chromium (Debian's, through Playwright), and reports the
median and mean of the time between consecutive batch commits (the file's /batches time_unix_s), and, from
the page, the monitor's own timing of its looks (reading the file and stream, the analysis, in all).

    python benchmarks/bench_monitor.py [--images 200] [--batch-images 10] [--rounds 2] [--refresh 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from qslab.analysis import recording  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "lab_config.toml"


def session(out: Path, calibration: Path, images: int, batch_images: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qslab.sequences.cli", "session", "--config", str(CONFIG), "--json",
                             "--images", str(images), "--batch-images", str(batch_images), "--out", str(out),
                             "--calibration-dir", str(calibration)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def batch_seconds(out: Path) -> np.ndarray:
    (path,) = out.glob("session-*.h5")
    with recording.SessionFile.open(path) as recorded:
        return np.diff(recorded.batch_table["time_unix_s"])


def watched(out: Path, calibration: Path, images: int, batch_images: int, refresh: float) -> tuple[np.ndarray, list]:
    """One session with a monitor and a browser page on it; the page's refresh timings sampled as it runs."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True)
    monitor = subprocess.Popen([sys.executable, "-m", "qslab.sequences.cli", "monitor", str(out), "--port", "0",
                                "--refresh", str(refresh)], stdout=subprocess.PIPE, text=True)
    timings = []
    try:
        url = re.search(r"http://\S+/", monitor.stdout.readline()).group(0)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            page = browser.new_page()
            page.goto(url)
            run = session(out, calibration, images, batch_images)
            done = threading.Event()
            threading.Thread(target=lambda: (run.wait(), done.set()), daemon=True).start()
            while not done.is_set():
                page.wait_for_timeout(1000 * refresh)
                cells = {key: page.locator(f'[data-key="{key}"]') for key in
                         ("refresh_read_ms", "refresh_analysis_ms", "refresh_total_ms", "images_done")}
                if all(cell.count() for cell in cells.values()):
                    values = [cell.first.get_attribute("data-value") for cell in cells.values()]
                    if "None" not in values and "" not in values:
                        timings.append(tuple(float(v) for v in values))
            browser.close()
    finally:
        monitor.terminate()
        monitor.wait()
    assert run.returncode == 0, run.stderr.read()
    return batch_seconds(out), timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-images", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--refresh", type=float, default=1.0, help="the monitor's --refresh, s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        warm = session(work / "warm", work / "calibration", 1, 1)
        assert warm.wait() == 0, warm.stderr.read()
        alone, with_monitor, timings = [], [], []
        for k in range(args.rounds):
            run = session(work / f"alone-{k}", work / "calibration", args.images, args.batch_images)
            assert run.wait() == 0, run.stderr.read()
            alone.append(batch_seconds(work / f"alone-{k}"))
            seconds, sampled = watched(work / f"watched-{k}", work / "calibration", args.images, args.batch_images,
                                       args.refresh)
            with_monitor.append(seconds)
            timings += sampled
    for name, runs in (("without the monitor", alone), ("with the monitor and a page open", with_monitor)):
        values = np.concatenate(runs)
        print(f"{name:34s} per batch of {args.batch_images}: median {1000 * np.median(values):.1f} ms, mean "
              f"{1000 * values.mean():.1f} ms, p90 {1000 * np.percentile(values, 90):.1f} ms ({values.size} batches)")
    if timings:
        read, analysis, total, _ = zip(*timings)
        print(f"monitor refresh ({len(timings)} samples of the page, --refresh {args.refresh:g} s): read median "
              f"{statistics.median(read):.1f} ms (max {max(read):.1f}), analysis median {statistics.median(analysis):.1f} ms "
              f"(max {max(analysis):.1f}), look in all median {statistics.median(total):.1f} ms (max {max(total):.1f})")


if __name__ == "__main__":
    main()
