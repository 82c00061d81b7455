"""The web console at /console: server-rendered pages (Jinja2) over the same `Catalog` operations as the
admin API, for admin callers signed in with a session cookie (sessions.py). Routes in app.py, what the
pages compute (search, diffs, charts) in views.py."""
