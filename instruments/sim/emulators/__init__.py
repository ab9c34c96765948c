"""The bench's emulators, one module per instrument family, and the default station's line-up.

``DEFAULT_INSTRUMENTS`` names each emulated instrument of the default station (DECISIONS.md,
hardware) and its kind; ``KINDS`` maps a kind to its emulator class. Each class carries
``driver``, the import path of the real driver that talks to it unchanged.
"""

from __future__ import annotations

from qslab.instruments.sim.emulators.alazar_ats import AlazarBoardEmulator
from qslab.instruments.sim.emulators.keysight_infiniium import KeysightInfiniiumEmulator
from qslab.instruments.sim.emulators.keysight_m8195a import KeysightM8195AEmulator
from qslab.instruments.sim.emulators.keysight_n77xx import (KeysightN7714AEmulator, KeysightN7744AEmulator,
                                                      KeysightN7762AEmulator)
from qslab.instruments.sim.emulators.scpi_amplifier import ScpiAmplifierEmulator
from qslab.instruments.sim.emulators.tektronix_awg70000 import TektronixAWG70000Emulator
from qslab.instruments.sim.emulators.thorlabs_mbx import ThorlabsMBXEmulator
from qslab.instruments.sim.emulators.thorlabs_pm100d import ThorlabsPM100DEmulator

KINDS = {
    "keysight_n7714a": KeysightN7714AEmulator,
    "keysight_n7762a": KeysightN7762AEmulator,
    "keysight_n7744a": KeysightN7744AEmulator,
    "thorlabs_pm100d": ThorlabsPM100DEmulator,
    "keysight_m8195a": KeysightM8195AEmulator,
    "scpi_amplifier": ScpiAmplifierEmulator,
    "thorlabs_mbx": ThorlabsMBXEmulator,
    "keysight_infiniium": KeysightInfiniiumEmulator,
    "tektronix_awg70002a": TektronixAWG70000Emulator,
    "alazar_ats9373": AlazarBoardEmulator,  # an alternative digitizer family (a PCIe card, in process only)  # an alternative AWG family (client AWG: two channels)
}

DEFAULT_INSTRUMENTS = {
    "laser": "keysight_n7714a",          # server laser (port server_laser.port) and LO source
    "attenuator": "keysight_n7762a",     # server output VOA (slot server_attenuator.slot)
    "power_meter": "keysight_n7744a",    # monitor tap (channel server_power_meter.channel)
    "pm100d": "thorlabs_pm100d",         # the alternative monitor-tap meter
    "awg": "keysight_m8195a",            # I, Q and carver drives, verification gate
    "client_awg": "keysight_m8195a",     # the client's time-bin processor (client_processor.awg)
    "amplifier": "scpi_amplifier",       # the client's amplifier
    "bias_carver": "thorlabs_mbx",       # bias of the pulse carver
    "bias_iq": "thorlabs_mbx",           # bias of the IQ modulator's children
    "digitizer": "keysight_infiniium",   # ch1 client receiver, ch2 server verification receiver
}

__all__ = ["DEFAULT_INSTRUMENTS", "KINDS"]
