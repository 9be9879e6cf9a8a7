"""The CLI layer: argument parsing (options declared once in options.py), printing, and turning
library errors into one line naming the flag. `calibrate` (the console script) runs `main`."""

from calibrate.cli.main import main

__all__ = ["main"]
