"""The catalog domain: entities (`entities.py`, registered by kind in `kinds.py`), API keys and callers,
access policies, the rules between entities (`integrity.py`, `writes.py`), the `Catalog` service, and the
repository protocol it is stored through (`repository.py`). Free of HTTP and SQL: import contracts in
pyproject.toml keep it so."""
