"""What goes wrong on purpose: instrument faults below the drivers, and a cheating client on the returned light."""
