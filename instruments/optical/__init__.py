"""The roles the experiment thinks in (Laser, IQModulator, HomodyneReceiver, ...): Protocols in ``roles``,
compositions over our qcodes drivers beside it. Declared limits are checked before a command is sent."""

from instruments.optical.amplifier import ScpiAmplifier
from instruments.optical.attenuator import AttenuatorChannel
from instruments.optical.awg_channels import AwgChannels
from instruments.optical.homodyne_receiver import DetectorSpec, DigitizerHomodyneReceiver, ReceiverCalibration
from instruments.optical.laser import LaserPort, LoLimit
from instruments.optical.limits import Limit, LimitError
from instruments.optical.modulators import AwgAmplitudeModulator, AwgIQModulator, ModulatorCalibration
from instruments.optical.power_meter import N774xPowerMeter, PM100DPowerMeter
from instruments.optical.roles import (AmplitudeModulator, Attenuator, HomodyneReceiver, IQModulator, Laser,
                                       OpticalAmplifier, PowerMeter, TimeBinProcessor)
from instruments.optical.time_bin_processor import AwgTimeBinProcessor, ProcessorCalibration

__all__ = [
    "AmplitudeModulator", "Attenuator", "AttenuatorChannel", "AwgAmplitudeModulator", "AwgChannels",
    "AwgIQModulator", "AwgTimeBinProcessor", "DetectorSpec", "DigitizerHomodyneReceiver", "HomodyneReceiver",
    "IQModulator", "Laser", "LaserPort", "Limit", "LimitError", "LoLimit", "ModulatorCalibration",
    "N774xPowerMeter", "OpticalAmplifier", "PM100DPowerMeter", "PowerMeter", "ProcessorCalibration",
    "ReceiverCalibration", "ScpiAmplifier", "TimeBinProcessor",
]
