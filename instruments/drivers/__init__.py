"""qcodes drivers for the instruments nobody maintains, each with a pyvisa-sim YAML beside it."""
