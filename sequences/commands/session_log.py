"""The log file of one session: every qslab, qcodes and pyvisa log record at --log-level, beside the session file.

Why a root handler for the session's duration only: the drivers, the station and the bench log through
their module loggers; the file gathers them with the session's own messages, and the process's logging
is as it was afterwards. Warnings still reach stderr as they did without a handler (logging's lastResort).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
COMMAND_LOGGER = "qslab.session"  # the command's own records: already said on the terminal, so file only


class SessionLog:
    """Appends log records at ``level`` and above to ``path`` from construction (which raises OSError when the
    file cannot be opened, before anything runs) until the ``with`` block ends."""

    def __init__(self, path: str | Path, level: str = "INFO"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(self.path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(FORMAT))
        file_handler.setLevel(level)
        self._root = logging.getLogger()
        self._handlers = [file_handler]
        if not self._root.handlers:  # keep what lastResort showed: warnings on stderr
            self._handlers.append(logging.StreamHandler(sys.stderr))
            self._handlers[1].setLevel(logging.WARNING)
            self._handlers[1].addFilter(lambda record: record.name != COMMAND_LOGGER)
        self._previous_level = self._root.level
        self._root.setLevel(min(self._previous_level or logging.WARNING, logging.getLevelName(level)))
        for handler in self._handlers:
            self._root.addHandler(handler)

    def __enter__(self) -> SessionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handler in self._handlers:
            self._root.removeHandler(handler)
            handler.close()
        self._handlers = []
        self._root.setLevel(self._previous_level)
