"""The server's output attenuator role over one N776xA attenuator channel.

The declared minimum attenuation bounds the light the server can send towards the client; it is
checked before a set, and on the attenuation read back before the shutter opens. Power-control
mode is refused (the attenuation then follows the input power, which the limit does not cover).
"""

from __future__ import annotations

import math
from typing import Any

from qslab.instruments.drivers._scpi import get_together
from qslab.instruments.optical.limits import Limit, LimitError, check_settable


class AttenuatorChannel:
    """``channel``: an N776xA channel (``attenuation_db``, ``shutter_open``, ``power_control``)."""

    def __init__(self, channel: Any, *, attenuation_min: Limit, name: str = "attenuator"):
        self.channel, self.name, self.attenuation_min = channel, name, attenuation_min

    @classmethod
    def from_driver(cls, driver: Any, unit: int, **options: Any) -> AttenuatorChannel:
        """The attenuator of slot ``unit`` of an N776xA (two slots per attenuator: att1 holds slots 1 and 2)."""
        return cls(getattr(driver, f"att{(unit + 1) // 2}"), **options)

    @staticmethod
    def safe_state(driver: Any) -> dict[str, Any]:
        """Every shutter closed; what reads back."""
        for attenuator in driver.attenuators:
            attenuator.shutter_open(False)
        return AttenuatorChannel.read_safe_state(driver)

    @staticmethod
    def read_safe_state(driver: Any) -> dict[str, Any]:
        """Every shutter as it reads back (nothing is sent but queries)."""
        return {f"{a.short_name}.shutter_open": bool(a.shutter_open()) for a in driver.attenuators}

    def check_attenuation_db(self, attenuation_db: float) -> None:
        if not math.isfinite(attenuation_db):
            raise LimitError(self.name, f"attenuation {attenuation_db!r} dB is not a finite number")
        self.attenuation_min.check_at_least(self.name, "attenuation", attenuation_db)
        check_settable(self.name, getattr(self.channel, "attenuation_db", None), "attenuation", attenuation_db, "dB")

    def set_attenuation_db(self, attenuation_db: float) -> None:
        self.check_attenuation_db(attenuation_db)
        self.channel.attenuation_db(attenuation_db)

    def attenuation_db(self) -> float:
        return float(self.channel.attenuation_db())

    def use_fastest_transitions(self) -> float | None:
        """Set the filter's transition speed (N776xA ``INP<s>:ATT:SPE``) to the top of the range the
        instrument reported at connect; returns it, or None for a channel without a speed setting.

        Why: an attenuation set waits |change| / speed before its error check answers, so at the default
        10 dB/s each 12 dB move between two layers' settings costs 1.2 s. Every intermediate setting of a
        move lies between two settings that passed the least-attenuation check, so a faster move lets no
        more light through; only the waiting gets shorter.
        """
        speed = getattr(self.channel, "attenuation_speed_db_s", None)
        fastest = getattr(getattr(speed, "vals", None), "max_value", None)
        if speed is None or fastest is None:
            return None
        if speed.get_latest() != fastest:
            speed(fastest)
        return float(fastest)

    def open_shutter(self) -> None:
        """The mode and the attenuation read back (one message), checked, then the shutter opened."""
        power_control, attenuation_db = get_together(self.channel.power_control, self.channel.attenuation_db)
        if power_control:
            raise LimitError(self.name, "the attenuator is in power-control mode, which the declared "
                                        f"{self.attenuation_min.describe()} does not cover")
        self.check_attenuation_db(float(attenuation_db))
        self.channel.shutter_open(True)

    def close_shutter(self) -> None:
        self.channel.shutter_open(False)
