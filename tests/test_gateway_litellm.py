"""The gateway in front of LiteLLM's proxy, a real upstream no one here wrote, answering its canned
`mock_response`s: two of them serving one model, for failover when one goes away."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import openai
import pytest

from .conftest import LazyModule, Server, create_key, run_cli
from .litellm_proxy import LiteLLMProxy
from .postgres import free_port

if TYPE_CHECKING:
    import anthropic
else:
    anthropic = LazyModule("anthropic")  # imported by the tests that use it, not at collection

pytestmark = pytest.mark.peer  # LiteLLM's proxies are processes of their own

KEY_A = "sk-litellm-a-3b8e1d6f0c"
KEY_B = "sk-litellm-b-9a2c4e7f1d"


def mock_models(answer: str) -> list[dict]:
    params = {"api_key": "dummy", "api_base": "http://127.0.0.1:9/v1", "mock_response": answer}
    return [{"model_name": "mock-chat", "litellm_params": {"model": "openai/mock-chat", **params}},
            {"model_name": "claude-mock", "litellm_params": {"model": "anthropic/claude-mock", **params}}]


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiteLLMProxy, LiteLLMProxy]]:
    a = LiteLLMProxy(tmp_path_factory.mktemp("litellm-a"), free_port(), mock_models("Hello from A"), KEY_A)
    b = LiteLLMProxy(tmp_path_factory.mktemp("litellm-b"), free_port(), mock_models("Hello from B"), KEY_B)
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def server(proxies: tuple[LiteLLMProxy, LiteLLMProxy], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Server, str]]:
    a, b = proxies
    tmp = tmp_path_factory.mktemp("gateway-litellm")
    db_url = f"sqlite:///{tmp}/catalog.db"
    reader = create_key(db_url, "reader", "read")
    base_a = f"http://127.0.0.1:{a.port}/v1"
    run_cli(db_url, "upstreams", "add", "litellm-a", "--base-url", a.base_url, "--api-key-env", "LITELLM_A_KEY",
            "--routing-only", "--protocol", "openai", "--protocol", f"anthropic={base_a}")
    run_cli(db_url, "upstreams", "add", "litellm-b", "--base-url", b.base_url, "--api-key-env", "LITELLM_B_KEY",
            "--routing-only")
    run_cli(db_url, "models", "add", "team-chat")
    run_cli(db_url, "routes", "add", "team-chat", "litellm-a", "--upstream-model", "mock-chat", "--weight", "1000")
    run_cli(db_url, "routes", "add", "team-chat", "litellm-b", "--upstream-model", "mock-chat")
    run_cli(db_url, "models", "add", "claude")
    run_cli(db_url, "routes", "add", "claude", "litellm-a", "--upstream-model", "claude-mock")
    mp = pytest.MonkeyPatch()
    mp.setenv("LITELLM_A_KEY", KEY_A)
    mp.setenv("LITELLM_B_KEY", KEY_B)
    server = Server(db_url, tmp / "server.log")
    mp.undo()
    yield server, reader
    server.stop()


def test_chat_through_litellm_streamed_and_not(server: tuple[Server, str]) -> None:
    gateway, reader = server
    client = gateway.client(reader)
    completion = client.chat.completions.create(model="team-chat", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hello from A"
    chunks = list(client.chat.completions.create(model="team-chat", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from A"


def test_langchain_chat_model_through_litellm(server: tuple[Server, str]) -> None:
    """LangChain's ChatOpenAI, pointed at modeldex with a modeldex key, as the README says it works: a call,
    a stream, and a model the key cannot use as the openai SDK's error."""
    from langchain_openai import ChatOpenAI

    gateway, reader = server
    chat = ChatOpenAI(model="team-chat", base_url=gateway.base_url + "/v1", api_key=reader,
                      max_retries=0, timeout=30)
    answer = chat.invoke("hi")
    assert answer.content == "Hello from A"
    assert answer.response_metadata["model_name"] and answer.usage_metadata is not None
    streamed = "".join(str(chunk.content) for chunk in chat.stream("hi"))
    assert streamed == "Hello from A"
    unknown = ChatOpenAI(model="no-such-model", base_url=gateway.base_url + "/v1", api_key=reader,
                         max_retries=0, timeout=30)
    with pytest.raises(openai.NotFoundError) as refused:
        unknown.invoke("hi")
    assert refused.value.code == "model_not_found"


def test_anthropic_messages_through_litellm(server: tuple[Server, str],
                                           proxies: tuple[LiteLLMProxy, LiteLLMProxy]) -> None:
    gateway, reader = server
    client = anthropic.Anthropic(api_key=reader, base_url=gateway.base_url, max_retries=0)
    message = proxies[0].past_known_failure(lambda: client.messages.create(
        model="claude", max_tokens=20, messages=[{"role": "user", "content": "hi"}]))
    assert message.content[0].text == "Hello from A"


def test_failover_when_an_upstream_goes_away(server: tuple[Server, str],
                                             proxies: tuple[LiteLLMProxy, LiteLLMProxy]) -> None:
    gateway, reader = server
    a, _b = proxies
    client = gateway.client(reader)
    a.stop()
    try:
        answers = {client.chat.completions.create(model="team-chat", messages=[{"role": "user", "content": "x"}])
                   .choices[0].message.content for _ in range(5)}
        assert answers == {"Hello from B"}
    finally:
        a.start()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mock-chat", messages=[])  # the upstream's id is not a catalog id
