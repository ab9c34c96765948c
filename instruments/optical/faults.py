"""What the sequences see of an instrument beyond its roles: the faults the drivers raise, and the
SettingsWatch role (reset evidence) over any qcodes driver.

Why here: sequences and calibration import nothing from qslab.instruments.drivers (tests/test_architecture.py);
this module is the one public place for the drivers' fault types and for the session's connection
upkeep (whether a driver retries and reconnects by itself; widening a reopened socket's reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qslab.instruments.drivers._scpi import (ESR_POWER_ON, InstrumentError, InstrumentFault, QueryRetries,
                                             changed_settings)
from qslab.instruments.drivers.upstream_fixes import widen_socket_reads

__all__ = ["DriverSettings", "InstrumentError", "InstrumentFault", "QueryRetries", "widen_socket_reads"]


class DriverSettings:
    """The SettingsWatch role over one connected driver (ours, or an upstream qcodes VisaInstrument)."""

    def __init__(self, driver: Any, *, name: str | None = None):
        self.driver, self.name = driver, name or driver.name

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
        return changed_settings(self.driver)
