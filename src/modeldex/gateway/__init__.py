"""The inference gateway: `POST /v1/chat/completions`, `/v1/messages` and the other inference routes go to
an upstream that serves the model, under the caller's key, its visibility policy and its limits.

The API layer (`api/inference.py`) finds the caller and the model it may call; this package does the rest:
which upstream (`routing.py`, `health.py`), the request as the upstream gets it (`request.py`), the pooled
client (`client.py`), forwarding and streaming with failover (`forward.py`), and answering the client over
RSGI or ASGI (`downstream.py`). It knows no HTTP framework and no store.
"""
