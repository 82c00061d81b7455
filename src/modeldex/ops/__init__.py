"""Running in production: rate-limit buckets, metrics and the access log. Used by the HTTP layer, free of
it."""
