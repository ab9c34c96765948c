"""SCPI for the emulators: parsing.py (headers, parameters, replies, framing, error codes) and
engine.py (command trees and their dispatch, common commands, error queue, status registers)."""
