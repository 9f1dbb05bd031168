"""Accountability: a tamper-evident log of every biometric operation."""
