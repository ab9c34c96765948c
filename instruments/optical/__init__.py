"""The roles the experiment thinks in (Laser, IQModulator, HomodyneReceiver, ...): Protocols in ``roles``,
compositions over our qcodes drivers beside it. Declared limits are checked before a command is sent."""

from qslab.instruments.optical.amplifier import ScpiAmplifier
from qslab.instruments.optical.attenuator import AttenuatorChannel
from qslab.instruments.optical.awg_channels import AwgChannels
from qslab.instruments.optical.homodyne_receiver import DetectorSpec, DigitizerHomodyneReceiver, ReceiverCalibration
from qslab.instruments.optical.laser import LaserPort, LoLimit
from qslab.instruments.optical.limits import Limit, LimitError
from qslab.instruments.optical.modulators import AwgAmplitudeModulator, AwgIQModulator, ModulatorCalibration
from qslab.instruments.optical.power_meter import N774xPowerMeter, PM100DPowerMeter
from qslab.instruments.optical.roles import (AmplitudeModulator, Attenuator, HomodyneReceiver, IQModulator, Laser,
                                       OpticalAmplifier, PowerMeter, TimeBinProcessor)
from qslab.instruments.optical.time_bin_processor import AwgTimeBinProcessor, ProcessorCalibration

__all__ = [
    "AmplitudeModulator", "Attenuator", "AttenuatorChannel", "AwgAmplitudeModulator", "AwgChannels",
    "AwgIQModulator", "AwgTimeBinProcessor", "DetectorSpec", "DigitizerHomodyneReceiver", "HomodyneReceiver",
    "IQModulator", "Laser", "LaserPort", "Limit", "LimitError", "LoLimit", "ModulatorCalibration",
    "N774xPowerMeter", "OpticalAmplifier", "PM100DPowerMeter", "PowerMeter", "ProcessorCalibration",
    "ReceiverCalibration", "ScpiAmplifier", "TimeBinProcessor",
]
