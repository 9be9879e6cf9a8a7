"""`python -m calibrate` runs the CLI."""

from calibrate.cli.main import main

main()
