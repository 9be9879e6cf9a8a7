"""The test suite of calibrate."""
