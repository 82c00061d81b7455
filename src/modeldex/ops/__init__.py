"""Running in production: rate limits, metrics and the access log. Used by the HTTP layer, free of it."""
