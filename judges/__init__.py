"""Judge configs and prompt files (data, not code). Importable only so an installed calibrate ships them."""
