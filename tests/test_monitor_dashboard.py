"""`qslab sweep` serves the Dask dashboard while it runs and prints its address first.

The address is fetched the moment the sweep prints it, from inside the write of that line (the sweep waits
for the fetch, the dashboard answers from the scheduler's own thread): no race with the end of the sweep.
"""

from __future__ import annotations

import contextlib
import io
import re
import urllib.request

from qslab.sequences.cli import main

from cli_capture import cli


class FetchingDashboard(io.StringIO):
    """stdout that fetches the dashboard's address when a line names it."""

    def __init__(self):
        super().__init__()
        self.fetched: list[tuple[str, int, bytes]] = []

    def write(self, text: str) -> int:
        found = re.search(r"Dask dashboard: (http://\S+)", text)
        if found:
            with urllib.request.urlopen(found.group(1), timeout=120) as answer:  # a hang guard only
                self.fetched.append((found.group(1), answer.status, answer.read()))
        return super().write(text)


def test_sweep_prints_the_dask_dashboard_address_and_it_answers(tmp_path):
    out = FetchingDashboard()
    with contextlib.redirect_stdout(out):
        code = main(["sweep", "--mu-min", "0.5", "--mu-max", "20", "--mu-points", "2", "--gains", "1.3", "--images",
                     "20", "--seeds", "1", "--workers", "1", "--out", str(tmp_path), "--dashboard", "127.0.0.1:0"])
    assert code == 0, out.getvalue()
    assert len(out.fetched) == 1, out.getvalue()
    url, status, body = out.fetched[0]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", url) and not url.endswith(":0/status")
    assert status == 200 and b"bokeh" in body.lower() and b"dask" in body.lower()
    assert out.getvalue().splitlines()[0] == f"Dask dashboard: {url}"  # the first thing the sweep says


def test_dashboard_off_and_a_bad_address():
    from qslab.sequences.commands.sweep import dashboard_address

    assert dashboard_address("off") is None and dashboard_address("127.0.0.1:0") == "127.0.0.1:0"
    code, _, err = cli("sweep", "--dashboard", "8787")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--dashboard" in err and "HOST:PORT" in err
    code, _, err = cli("sweep", "--dashboard", "localhost:99999")
    assert code == 2 and "port 0..65535" in err
