"""`python -m calibrate` runs the CLI."""

from calibrate.cli import main

main()
