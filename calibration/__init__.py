"""Procedures that measure, fit and store versioned calibration records."""
