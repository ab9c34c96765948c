"""The roles the experiment thinks in (Laser, IQModulator, HomodyneReceiver, ...)."""
