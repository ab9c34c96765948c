"""pyvisa-sim protocol files for the drivers beside this package (loaded as "instruments.drivers.sims:<file>.yaml")."""
