"""The reports layer: figures and markdown/HTML reports drawn from result records; computes nothing new."""
