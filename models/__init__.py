"""Model configs for `calibrate respond`, shipped inside the package as calibrate.bundled_models."""
