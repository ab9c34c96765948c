"""Procedures that measure, fit and store versioned calibration records.

- ``result``: Estimate, CalibrationResult, CalibrationError (what every procedure returns or raises);
- ``records``: the record store (one immutable HDF5 file per run; queries; ``require`` for sequences);
- ``photons``: photons per symbol at the server's output (monitor tap, VOA-output meter, declared losses);
- ``homodyne``: electronic noise, shot-noise linearity, SNU, clearance and efficiency of both receivers;
- ``amplifier``: the client amplifier's gain and noise figure through the client's receiver;
- ``modulators``: MZM / IQ modulator transfer and bias calibration;
- ``channel``: the honest round trip's T and eps from public pilot symbols;
- ``processor``: the client processor's V_pi, offset and loss per pass, and the photon cross-check.
"""
