"""Bundled sample data: four calibration sets and benchmark responses from two model styles."""
