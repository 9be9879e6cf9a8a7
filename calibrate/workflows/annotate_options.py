"""The labelling study's choices and defaults, in a module that imports nothing, so that the CLI
declares `annotate`'s options (and `calibrate --help` lists them) without loading the workflow."""

STRATA = ("none", "set", "category")
# How the study's pairs are chosen (each with a known chance, recorded with the labels): "random" (in
# proportion to --stratify's groups), "stratified" (by the judge's judged class), "uncertain" (pairs the
# judge is unsure of drawn more often)
SELECTIONS = ("random", "stratified", "uncertain")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
