"""Pure computation: leakage bounds, estimators, DSP, the network, records, replay, plots.

Conventions, fixed once (docs/PHYSICS.md 0): quadratures x = a + a^dagger and
p = -i(a - a^dagger), vacuum variance 1 (shot-noise units, SNU); covariance matrices in xpxp
order; excess noise referred to the channel output as in the paper. This package never imports
`instruments`, `calibration` or `sequences`, so live runs and replays share the same code.
"""
