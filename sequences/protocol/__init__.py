"""The server's and the client's steps of secure layers on the station (docs/ARCHITECTURE.md, "One secure layer").

Server: weight rows -> complex symbols (two weights per mode, per-layer scale for mu) -> IQ drive
codes (arcsine predistortion from the modulator records) -> one AWG segment per layer, played row
after row; the VOA set for mu from the photons record and the monitor tap; per batch, its LO phase
modulator's channel gates the rows it verifies and picks X or P for each (its secret).
Client: data -> Givens angles -> processor codes, one block of N bins per image of the batch; the
amplifier at the gain of the amplifier record.
One digitizer acquisition per (batch, layer) reads both receivers: channel 1 the client's outcome
per (image, row), channel 2 the server's samples of its gated rows; the receivers' DSP (the same
code a replay runs) turns them into SNU.

The server verifies against the fields its calibrated modulator model predicts for the codes it
actually played (AwgIQModulator.played_fields), scaled to the mu it measured: the AWG's 8-bit
rounding is then not mistaken for excess noise of the client.

Faults: every acquisition ends with VACUUM_TAIL_SYMBOLS slots of vacuum, whose mean is each DC-coupled
receiver's DC level (taken off the record) and which must otherwise look like the receivers'
calibration (variance 1 + v_el, one DC level throughout), else ReceiverError: data scaled by a
changed LO or gain, or on a drifting DC level, are never used. A clipped record is taken again with wider ranges. For
the session's checks between batches (sequences/session_guard.py) the link reads the monitor tap
(read_light) and the receivers' vacuum (read_vacuum), and applies the cures: relock_biases + renull,
set_laser_power_dbm + remeasure_mu, reapply_instrument after a reset.

The modules: `secure_link.py` (SecureLink: the roles and the state its parts share), `setup.py`
(limits, uploads, attenuation, pilots, leakage nulling, the whole set-up again), `acquisition.py`
(one (batch, layer): gate, digitize, ranges, clipping, vacuum tails), `health.py` (readings and cures
between batches); `layers.py` and `errors.py` hold what they hand out. The pilots' fits are pure
numpy in analysis/pilots.py.

The API the session, the calibrations and the session guard use is exported here.
"""

from qslab.sequences.protocol.acquisition import VacuumReading
from qslab.sequences.protocol.errors import ProtocolError, ReceiverError
from qslab.sequences.protocol.health import LightReading
from qslab.sequences.protocol.layers import Layer, LayerCapture, PilotResult
from qslab.sequences.protocol.secure_link import SecureLink

__all__ = ["Layer", "LayerCapture", "LightReading", "PilotResult", "ProtocolError", "ReceiverError", "SecureLink",
           "VacuumReading"]
