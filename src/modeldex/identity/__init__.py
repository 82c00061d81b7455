"""Tokens from the organisation's identity provider, beside API keys.

`keysets.py` fetches and caches each issuer's signing keys in the background; `tokens.py` checks a token
against an issuer's configuration (never trusting what the token says about how to check it);
`credentials.py` is the `Credentials` that `api/callers.py` tries after the key table, with a cache of
verified tokens so that a repeat costs a hash and a lookup, not a signature check.
"""
