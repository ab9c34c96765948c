"""Experiment sequences: config, station, protocol, lab session, sweeps and the `qslab` CLI."""
