"""HTTP: the ASGI application. The OpenAI Models routes run on a hand-written hot path (`models.py`);
everything else goes through Starlette (`routes.py`)."""
