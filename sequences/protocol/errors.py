"""What stops a secure layer: the link's two errors."""

from __future__ import annotations


class ProtocolError(RuntimeError):
    """A secure-layer step that cannot go on: the message says which step and why."""


class ReceiverError(ProtocolError):
    """A receiver's record is not what its calibration describes (an offset, more or less noise): its data
    would be wrong, so they are not used. ``reading``: the VacuumReading that showed it."""

    def __init__(self, message: str, reading):
        super().__init__(message)
        self.reading = reading
