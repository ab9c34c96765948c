"""The monitor-tap power meter role over an N774xA channel or a Thorlabs PM100D (upstream driver)."""

from __future__ import annotations

from typing import Any


class N774xPowerMeter:
    """``channel``: an N774xA channel (``read_power_w``, ``wavelength_m``, ``averaging_time_s``)."""

    def __init__(self, channel: Any, *, name: str = "power_meter"):
        self.channel, self.name = channel, name

    @classmethod
    def from_driver(cls, driver: Any, unit: int, **options: Any) -> N774xPowerMeter:
        """Channel ``unit`` of an N774xA (sequences/config.py DriverSpec.adapter)."""
        return cls(getattr(driver, f"ch{unit}"), **options)

    def read_power_w(self) -> float:
        return float(self.channel.read_power_w())

    def read_powers_w(self, count: int) -> list[float]:
        """``count`` readings in one round trip (the N774xA answers repeated queries in one message)."""
        return [float(value) for value in self.channel.read_powers_w(count)]

    def set_wavelength_m(self, wavelength_m: float) -> None:
        self.channel.wavelength_m(wavelength_m)

    def set_averaging_time_s(self, averaging_time_s: float) -> None:
        self.channel.averaging_time_s(averaging_time_s)

    def use_averaging_time_s(self, averaging_time_s: float) -> None:
        """``set_averaging_time_s`` unless the driver already set (or read) that value: a check after every batch
        would otherwise send the same setting each time. A foreign change is the settings check's to find."""
        if self.channel.averaging_time_s.get_latest() != averaging_time_s:
            self.set_averaging_time_s(averaging_time_s)


class PM100DPowerMeter:
    """``meter``: qcodes_contrib's Thorlab_PM100D (``power`` in W, ``wavelength`` in m)."""

    def __init__(self, meter: Any, *, name: str = "power_meter"):
        self.meter, self.name = meter, name

    @classmethod
    def from_driver(cls, driver: Any, unit: int | None = None, **options: Any) -> PM100DPowerMeter:
        """The PM100D has one sensor: ``unit`` is not used."""
        return cls(driver, **options)

    def read_power_w(self) -> float:
        return float(self.meter.power())

    def read_powers_w(self, count: int) -> list[float]:
        """``count`` readings, one query each (the upstream driver has no compound read)."""
        return [self.read_power_w() for _ in range(count)]

    def set_wavelength_m(self, wavelength_m: float) -> None:
        self.meter.wavelength(wavelength_m)
