"""The one exception type that reaches the user as a single line and exit code 2."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable


class CalibrateError(Exception):
    """A problem with the user's input or setup, worded for the user.

    The library names the parameters a message is about by their Python names (`params`), so that a
    notebook user reads `limit must be ...`; the CLI rewords them as its flags (`--limit must be ...`)
    with `worded`. The CLI prints the message as one line and exits with code 2; library callers can
    catch it. Anything else that escapes is a bug in calibrate, not bad input.
    """

    exit_code = 2

    def __init__(self, message: str, params: tuple[str, ...] = ()):
        super().__init__(message)
        self.params = params

    def worded(self, name_of: Callable[[str], str]) -> str:
        """The message with the first mention of each parameter it is about renamed by `name_of`."""
        text = str(self)
        for param in self.params:
            mention = re.search(rf"(?<![\w-]){re.escape(param)}(?![\w-])", text)
            if mention:
                text = text[:mention.start()] + name_of(param) + text[mention.end():]
        return text


def is_disk_full(error: BaseException) -> bool:
    """An OSError (also pyarrow's, which carries no errno) or a SQLite error that says the disk is full."""
    text = str(error)
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in text \
        or "database or disk is full" in text
