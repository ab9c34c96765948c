"""What the sequences see of an instrument beyond its roles: the faults the drivers raise, and the
SettingsWatch role (reset evidence) over any qcodes driver.

Why here: sequences and calibration import nothing from qslab.instruments.drivers (tests/test_architecture.py);
this module is the one public place for the drivers' fault types, their retry events, and the session's
connection upkeep (whether a driver retries and reconnects by itself, and reconnecting one that does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qslab.instruments.drivers._scpi import (ESR_POWER_ON, InstrumentError, InstrumentFault, QueryRetries,
                                             SettingsPlan, settings_evidence)
from qslab.instruments.drivers.retry_events import (ConnectionReopened, QueryRetried, RetryEvent, add_retry_observer,
                                                    remove_retry_observer)
from qslab.instruments.drivers.visa_connection import reopen

__all__ = ["ConnectionReopened", "DriverSettings", "InstrumentError", "InstrumentFault", "QueryRetried", "QueryRetries",
           "RetryEvent", "add_retry_observer", "remove_retry_observer"]


class DriverSettings:
    """The SettingsWatch role over one connected driver (ours, or an upstream qcodes VisaInstrument)."""

    def __init__(self, driver: Any, *, name: str | None = None):
        self.driver, self.name = driver, name or driver.name
        self._plan = SettingsPlan(driver)

    def power_cycled(self) -> bool:
        """IEEE 488.2 *ESR? bit 7 (reading clears it): our drivers' power_cycled(), a plain *ESR? for a VISA driver
        without it (qcodes' Infiniium), False for an instrument without the register (the MBX)."""
        if hasattr(self.driver, "power_cycled"):
            return bool(self.driver.power_cycled())
        if hasattr(self.driver, "visa_handle"):
            return bool(int(float(self.driver.ask("*ESR?"))) & ESR_POWER_ON)
        return False

    def changed_settings(self) -> Mapping[str, tuple[Any, Any]]:
        """Settable parameters whose read-back differs from the driver's cache (what it last set or read)."""
        return settings_evidence(self.driver, power_on_bit=False, plan=self._plan)[1]

    def evidence(self) -> tuple[bool, Mapping[str, tuple[Any, Any]]]:
        """(``power_cycled()``, ``changed_settings()``), read in that order: in ONE compound query where the driver
        asks queries together (ours), else as the two calls read them."""
        if hasattr(self.driver, "power_cycled"):
            return settings_evidence(self.driver, plan=self._plan)
        return self.power_cycled(), self.changed_settings()

    def reconnects_by_itself(self) -> bool:
        """Our drivers retry and reconnect inside their queries; a serial instrument has no VISA line to reopen."""
        return isinstance(self.driver, QueryRetries) or not hasattr(self.driver, "visa_handle")

    def reconnect(self) -> None:
        """A fresh connection (drops whatever is on the line): the driver's own ``reconnect()``, or, for a qcodes
        VisaInstrument without one (qcodes_contrib's PM100D), its resource reopened through qcodes' set_address."""
        if hasattr(self.driver, "reconnect"):
            self.driver.reconnect()
        else:
            reopen(self.driver)
