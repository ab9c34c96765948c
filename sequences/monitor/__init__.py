"""`qslab monitor`: a running session and its station, live in a browser.

Two sources, both read-only from the monitor's side:

    the session file   (analysis/recording/, HDF5 SWMR): run id, settings, calibrated values, every committed
                       batch, the status and the final results. The monitor opens it without file locks,
                       reads what was committed since its last look, and closes it again (live_session.py);
    the status stream  ``session-<run id>.status.jsonl`` beside it, one JSON line per batch written by the session
                       (status.py, StatusPublisher): the instruments' key readings from the drivers' caches (no
                       query is sent for it), the calibration records in use, faults and cures as they happen.

Accuracy, the verification's T and eps with their limits and the weight leakage spent so far are computed
by the monitor from the file with the same analysis code the session and `qslab replay` use (live_state.py);
the page (page.py) is a Bokeh server document, served by server.py. status.py imports no Bokeh: the session
imports only it.
"""
