"""The workflows layer: fit, compare, score, respond and batch, each composing data, judging, store,
stats and reports into one function with a typed result."""
