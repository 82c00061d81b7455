"""HTTP: the application granian serves (`app.py`, one dispatch for every route). The OpenAI Models routes
run on a hand-written hot path (`model_routes.py`); everything else is the Starlette side app
(`side_app.py`: health, metrics, OpenAPI, and the admin API in `admin*.py`). `callers.py` is the one
place a request's credential becomes a `Caller`."""
