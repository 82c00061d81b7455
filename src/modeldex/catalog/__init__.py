"""The catalog domain: models, API keys and the rules about them. Free of HTTP and SQL."""
