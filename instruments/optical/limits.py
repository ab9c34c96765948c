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


def check_settable(role: str, parameter, what: str, requested: float, unit: str) -> None:
    """Refuse a value the instrument's own parameter would refuse (its validator: the range the instrument reported
    or was configured with), as a LimitError before anything is sent, instead of a qcodes ValueError mid-sequence."""
    validator = getattr(parameter, "vals", None)
    if validator is None or not hasattr(validator, "validate"):
        return
    try:
        validator.validate(requested)
    except (ValueError, TypeError):
        name = getattr(parameter, "full_name", "the instrument")
        raise LimitError(role, f"{what} {requested:g} {unit} is outside what {name} can be set to "
                               f"({validator})") from None
