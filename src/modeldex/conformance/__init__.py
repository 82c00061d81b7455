"""`modeldex check`: grade any OpenAI-compatible server's Models endpoint (and its chat route, where it has
one) against what the clients people use rely on. A client of HTTP only: it imports nothing of the rest."""
