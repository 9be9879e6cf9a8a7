"""The labelling study's choices and defaults, in a module that imports nothing, so that the CLI
declares `annotate`'s options (and `calibrate --help` lists them) without loading the workflow."""

STRATA = ("none", "set", "category")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
