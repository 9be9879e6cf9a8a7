"""The statistics layer: pure functions of arrays and judgment tables. Scoring rules, metrics with
bootstrap intervals, score mappings (scikit-learn style estimators), agreement, prediction-powered
inference, class-prevalence correction, and the fit, comparison and benchmark statistics built on them."""
