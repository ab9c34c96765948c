"""The optical link and how the bench samples it: mode-level model, random streams, modulators, waveforms, receivers."""
