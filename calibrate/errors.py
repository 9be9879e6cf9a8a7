"""The one exception type that reaches the user as a single line and exit code 2."""

from __future__ import annotations


class CalibrateError(Exception):
    """A problem with the user's input or setup, worded for the user.

    The CLI prints the message as one line and exits with code 2; library callers can catch it.
    Anything else that escapes is a bug in calibrate, not bad input.
    """

    exit_code = 2
