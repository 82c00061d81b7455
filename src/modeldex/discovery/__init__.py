"""Discovery: learning models from upstream OpenAI-compatible servers (vLLM, Ollama, LiteLLM, OpenAI,
MiniMax, another modeldex).

`fetch` asks an upstream for its `/v1/models` (timeouts, retries, a size cap), `answer` validates what it
said and turns it into catalog models, `sync` applies that to the catalog in one write unit, and `poller`
does it on each upstream's interval in every server worker, one process per upstream at a time.
"""
