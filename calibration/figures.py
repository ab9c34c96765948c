"""Calibration figures drawn beside the measurement, in a second process, instead of in its way.

Why: drawing a PNG with matplotlib is pure Python (text layout, ticks, the Agg raster) and took about a
third of the calibrations' time in `qslab session` (14 figures, several seconds), while the measurement
itself runs in one process (the bench's emulators share its interpreter). Inside ``background()`` each
``draw(plot, path, ...)`` hands the plotting function and its data to one spawned worker process and
returns at once; leaving ``background()`` waits until every figure is written, so nobody reads a
figure path before its file exists. Outside ``background()`` ``draw`` plots in place, as before:
procedures and tests that call a calibration directly see no difference. The figures are the same
files either way (same function, same data).

``$QSLAB_FIGURES=off`` draws none (``draw`` returns at once, records name no figure): for scripted runs that
never look at them, such as the test suite, where matplotlib was a third of the CPU. Unset or ``on``: drawn.

A figure that fails to draw does not hide the measurement: its records are written, and leaving
``background()`` raises FigureError naming every figure that failed and why.

The worker outlives ``background()``: the next one in the same process (a sweep's next session, the next
session of a test run) hands its figures to the same worker, which has matplotlib loaded already (its import
is about a second of CPU, more than drawing a session's figures). It is ended when this process exits (no
figure is left to draw then), or replaced when it failed. Each figure starts from a clean pyplot state (every
figure of the previous one closed), as in a fresh worker.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)
FIGURES_ENV = "QSLAB_FIGURES"
_lock = threading.Lock()
_active: _Drawer | None = None
_kept: _Drawer | None = None  # the worker between two background() uses (module docstring)
_in_place = threading.Event()  # set inside in_place(): background() hands nothing to a worker


class FigureError(RuntimeError):
    """One or more calibration figures could not be drawn (their records are written; only the PNG is missing)."""


class _Drawer:
    """One worker process (``python -m qslab.calibration.figures``, so nothing of the caller's main module is
    imported again) fed pickled ``(plot, args, kwargs)`` jobs through its stdin by a writer thread (a large job
    never blocks the measurement); it answers each job with None or the error's text on its stdout, in order."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "qslab.calibration.figures"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = os.getpid()  # the process that owns it (a forked child starts its own)
        self.names: list[str] = []
        self.jobs: queue.Queue = queue.Queue()
        self.writer = threading.Thread(target=self._write, name="calibration-figures", daemon=True)
        self.writer.start()

    def _write(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                self.process.stdin.write(job)
                self.process.stdin.flush()
        except (BrokenPipeError, OSError):  # the worker died: collect() reports every figure it did not answer
            pass
        finally:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def usable(self) -> bool:
        """Whether the next background() may hand it figures: this process's, running, its writer alive."""
        return self.pid == os.getpid() and self.process.poll() is None and self.writer.is_alive()

    def submit(self, plot: Callable, args, kwargs) -> bool:
        """Queue one figure; False (nothing queued) when its function or data cannot be pickled."""
        try:
            job = pickle.dumps((plot, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            return False
        self.names.append(f"{plot.__module__}.{plot.__qualname__}")
        self.jobs.put(job)
        return True

    def collect(self) -> tuple[list[str], bool]:
        """Wait for every figure queued since the last collect: ("plot: error" of each that failed, whether the
        worker is still usable). A worker that stopped answering is waited for and not used again."""
        answers: list = []
        with contextlib.suppress(EOFError, pickle.UnpicklingError, OSError, ValueError):
            while len(answers) < len(self.names):
                answers.append(pickle.load(self.process.stdout))
        names, self.names = self.names, []
        usable = len(answers) == len(names)
        if not usable:  # it died (or answered garbage): nothing more will come
            self.close()
            answers += [f"the figure worker exited ({self.process.returncode})"] * (len(names) - len(answers))
        return [f"{name}: {error}" for name, error in zip(names, answers) if error is not None], usable

    def close(self) -> None:
        """No more jobs: the worker ends after the ones queued (their answers unread)."""
        self.jobs.put(None)
        self.writer.join()
        self.process.wait()  # (its answers are a few bytes each: they fit in the pipe unread)
        with contextlib.suppress(OSError):
            self.process.stdout.close()


def wanted() -> bool:
    """Whether figures are drawn: ``$QSLAB_FIGURES`` unset or ``on``; ``off`` draws none (module docstring)."""
    value = os.environ.get(FIGURES_ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"${FIGURES_ENV}={os.environ[FIGURES_ENV]!r}; expected 'on' or 'off'")
    return value == "on"


def draw(plot: Callable, *args, **kwargs) -> None:
    """``plot(*args, **kwargs)`` (which writes one figure file), when figures are ``wanted()``: in the background
    worker inside ``background()``, else here. In the background ``plot`` is a module-level function and its
    arguments picklable (arrays, numbers, dataclasses); a figure whose data is not (a closure) is drawn here."""
    if not wanted():
        return
    with _lock:
        drawer = _active
    if drawer is None or not drawer.submit(plot, args, kwargs):  # (a closure among the data: drawn here)
        plot(*args, **kwargs)


@contextlib.contextmanager
def in_place() -> Iterator[None]:
    """Inside, every figure is drawn in this process even within ``background()``: for a caller that inspects the
    figures as they are saved (the figure checks), or a host where spawning a process is not wanted."""
    _in_place.set()
    try:
        yield
    finally:
        _in_place.clear()


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Figures drawn by ``draw`` inside go to one worker process; on leaving, wait for all of them (FigureError
    naming the ones that failed). Nested uses share the outermost worker; the next outermost use takes the same
    worker again (module docstring). With figures not ``wanted()``, no worker is started."""
    global _active, _kept
    kept = None
    with _lock:
        if _active is not None or _in_place.is_set() or not wanted():  # (no worker when no figure is drawn)
            outer = True
        else:
            outer = False
            kept, _kept = _kept, None
            _active = kept if kept is not None and kept.usable() else _Drawer()
    if kept is not None and kept is not _active and kept.pid == os.getpid():
        kept.close()  # it exited meanwhile: reaped
    if outer:
        yield
        return
    try:
        yield
    except BaseException:  # the error in flight wins; the figures of what was done are still finished
        _finish()
        raise
    failed = _finish()
    if failed:
        raise FigureError(f"{len(failed)} calibration figure(s) could not be drawn (the records are written): "
                          + "; ".join(failed))


def _finish() -> list[str]:
    global _active, _kept
    with _lock:
        drawer, _active = _active, None
    try:
        failed, usable = drawer.collect()
    except BaseException:  # interrupted while waiting: its answers are out of step, so it is not used again
        drawer.close()
        raise
    if usable:
        with _lock:
            if _kept is None:  # (a forked child's background() may have kept its own meanwhile)
                _kept, drawer = drawer, None
        if drawer is not None:
            drawer.close()
    for line in failed:
        log.error("figure not drawn: %s", line)
    return failed


@atexit.register
def _end_kept() -> None:
    """At exit: the kept worker is ended and waited for. No figure is pending (background() waited for each), so it
    is stopped rather than left to finish importing matplotlib first (a process whose session drew nothing, e.g. one
    that stopped on bad input, need not wait for that)."""
    global _kept
    with _lock:
        drawer, _kept = _kept, None
    if drawer is not None and drawer.pid == os.getpid():
        drawer.process.terminate()
        drawer.close()


def _serve() -> None:
    """The worker: draw each job from stdin, answer None or the error's text on stdout, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the session at its safe points; it then waits here
    jobs, answers = sys.stdin.buffer, sys.stdout.buffer
    with contextlib.redirect_stdout(sys.stderr):  # nothing a figure prints may corrupt the answers
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # loaded while the first measurement runs, not in the first figure

        while True:
            try:
                plot, args, kwargs = pickle.load(jobs)
            except EOFError:
                return
            try:
                plot(*args, **kwargs)
                answer = None
            except Exception as error:  # noqa: BLE001 - the caller reports it, naming the figure
                answer = f"{type(error).__name__}: {error}"
            matplotlib.pyplot.close("all")  # the next figure starts as in a fresh worker, whatever this one left
            pickle.dump(answer, answers)
            answers.flush()


if __name__ == "__main__":
    _serve()
