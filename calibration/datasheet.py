"""Values a calibration takes from a datasheet rather than measuring them, with the tolerance that makes them honest.

The RF drivers' gains (V at the modulator per V of AWG output) are datasheet values: the procedures measure
V_pi at the AWG, and V_pi at the modulator is that times the gain. Real drivers differ from their datasheets;
a gain tolerance of +-DRIVER_GAIN_TOLERANCE, read as a uniform spread (one sigma = tolerance / sqrt 3, GUM
type B), is added in quadrature to every value that goes through one, so a V_pi at the modulator states the
uncertainty it has. What the stack drives with is V_pi at the AWG (measured), which carries none of it.
"""

from __future__ import annotations

import math

from qslab.analysis.estimate import Estimate

DRIVER_GAIN_TOLERANCE = 0.10   # relative, +- (an RF driver amplifier's gain spread over units and temperature)


def through_driver_gain(at_awg: Estimate, driver_gain: float) -> Estimate:
    """``at_awg`` (a voltage at the AWG) at the modulator through a datasheet ``driver_gain``, the gain's tolerance
    included."""
    value = at_awg.value * driver_gain
    relative_gain_sigma = DRIVER_GAIN_TOLERANCE / math.sqrt(3.0)
    return Estimate(value, math.hypot(at_awg.uncertainty * driver_gain, value * relative_gain_sigma), at_awg.unit)
