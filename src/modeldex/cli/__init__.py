"""The `modeldex` command line: serve, keys, models, db."""
