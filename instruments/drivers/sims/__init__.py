"""pyvisa-sim protocol files for the drivers beside this package (loaded as "qslab.instruments.drivers.sims:<file>.yaml")."""
