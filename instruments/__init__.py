"""The hardware layer: qcodes drivers, the optical roles built from them, and the virtual bench."""
