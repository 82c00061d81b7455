"""The `modeldex` command line: serve, keys, models, aliases, groups, upstreams, catalog, changes, db.
Commands work on the database (`LocalBackend`) or a running server's admin API (`HttpBackend`)."""
