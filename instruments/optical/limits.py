"""Declared limits (lab_config.toml) and the error a role raises, before sending anything, when a value breaks one."""

from __future__ import annotations

from dataclasses import dataclass


class LimitError(ValueError):
    """A requested value breaks a declared limit; the role refused it and sent nothing to the instrument."""

    def __init__(self, role: str, message: str):
        self.role = role
        super().__init__(f"{role}: {message}; nothing was sent")


@dataclass(frozen=True)
class Limit:
    """One declared limit: its value, its unit (as written in the key name) and where it was declared."""

    value: float
    unit: str
    source: str  # the config key path, e.g. "instruments.laser.limits.power_max_dbm"

    def describe(self) -> str:
        return f"{self.source} = {self.value:g} {self.unit}"

    def check_at_most(self, role: str, what: str, requested: float) -> None:
        """Refuse requested > value (or a non-finite request)."""
        if not requested <= self.value:  # also catches NaN
            raise LimitError(role, f"{what} {requested:g} {self.unit} is above the declared limit {self.describe()}")

    def check_at_least(self, role: str, what: str, requested: float) -> None:
        """Refuse requested < value (or a non-finite request)."""
        if not requested >= self.value:
            raise LimitError(role, f"{what} {requested:g} {self.unit} is below the declared limit {self.describe()}")
