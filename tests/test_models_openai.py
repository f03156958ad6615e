"""OpenAI-compatible backends against httpx.MockTransport: bodies, headers, errors, secrets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import afperturb.models as models
from afperturb.errors import BackendResponseError, BackendTimeout, DesignError, RateLimited
from afperturb.models._http import parse_retry_after, scrub
from afperturb.models.base import GenerationContext, is_retryable
from afperturb.models.openai import OpenAIChat, OpenAICompletions, flatten, prompt_cache_key
from afperturb.models.pricing import cost, price, reset_prices, set_price
from afperturb.records import Condition, Facts, Message, Request, SamplingParams, Usage

KEY = "sk-SECRET-sentinel-0123456789"
MSGS = [Message(role="system", content="SYS"), Message(role="user", content="Q")]
CTX = GenerationContext(
    condition=Condition(id="cond-7", scenario="s", levels={}, facts=Facts()),
    request=Request(id="req-42", text="q"),
)
Handler = Callable[[httpx.Request], httpx.Response]


def chat_ok(texts: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    texts = texts or ["hello"]
    return {
        "id": "chatcmpl-1",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5},
        **extra,
    }


class Recorder:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.requests[-1].content)  # type: ignore[no-any-return]


def make(cls: type[OpenAIChat] | type[OpenAICompletions], handler: Handler, **kw: Any) -> Any:
    rec = Recorder(handler)
    client = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    return cls("gpt-4o", api_key=KEY, client=client, **kw), rec


async def test_chat_request_body_headers_and_parse() -> None:
    model, rec = make(
        OpenAIChat,
        lambda r: httpx.Response(200, json=chat_ok(), headers={"x-request-id": "req_abc"}),
        headers={"HTTP-Referer": "https://example.org"},
    )
    params = SamplingParams(temperature=0.0, max_tokens=100, stop=("</OUTPUT>",), seed=5)
    c = await model.generate(MSGS, params, CTX)
    req = rec.requests[0]
    assert str(req.url) == "https://api.openai.com/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["http-referer"] == "https://example.org"
    assert rec.body == {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q"}],
        "max_tokens": 100,
        "stop": ["</OUTPUT>"],
        "temperature": 0.0,
        "seed": 5,
        # OpenAI's own API: one condition's requests share a cache key (its system prompt's).
        "prompt_cache_key": prompt_cache_key(MSGS),
    }
    assert c.text == "hello"
    assert c.finish_reason == "stop"
    assert (c.usage.input_tokens, c.usage.output_tokens) == (11, 5)
    assert c.provider_request_id == "req_abc"
    assert c.model == "openai/gpt-4o"
    assert c.latency_s >= 0.0


async def test_reasoning_model_params_and_body_id() -> None:
    model, rec = make(OpenAIChat, lambda r: httpx.Response(200, json=chat_ok()))
    params = SamplingParams(temperature=None, max_tokens=1000, reasoning_tokens=4000)
    c = await model.generate(MSGS, params)
    assert "temperature" not in rec.body
    assert "max_tokens" not in rec.body
    assert rec.body["max_completion_tokens"] == 5000
    assert rec.body["reasoning_effort"] == "medium"
    assert c.provider_request_id == "chatcmpl-1"


async def test_n_votes_become_alternatives() -> None:
    model, rec = make(OpenAIChat, lambda r: httpx.Response(200, json=chat_ok(["a", "b", "c"])))
    c = await model.generate(MSGS, SamplingParams(n=3))
    assert rec.body["n"] == 3
    assert c.text == "a"
    assert c.alternatives == ("b", "c")


async def test_chat_prefill_is_last_assistant_turn_and_prepended() -> None:
    model, rec = make(OpenAIChat, lambda r: httpx.Response(200, json=chat_ok([" more"])))
    prefilled = [*MSGS, Message(role="assistant", content="<SCRATCHPAD_REASONING>")]
    c = await model.generate(prefilled, SamplingParams())
    assert rec.body["messages"][-1] == {"role": "assistant", "content": "<SCRATCHPAD_REASONING>"}
    assert c.text == "<SCRATCHPAD_REASONING> more"
    c2 = await model.generate(MSGS, SamplingParams(prefill="P:"))
    assert rec.body["messages"][-1] == {"role": "assistant", "content": "P:"}
    assert c2.text == "P: more"


async def test_completions_flatten_document_with_prefill() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        body = {
            "id": "cmpl-9",
            "choices": [{"index": 0, "text": " a dangerous thing.", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 4},
        }
        return httpx.Response(200, json=body)

    model, rec = make(OpenAICompletions, handler, base_url="http://127.0.0.1:8000/v1/")
    msgs = [*MSGS, Message(role="assistant", content="The user is asking for")]
    c = await model.generate(msgs, SamplingParams(temperature=1.0, max_tokens=50))
    assert str(rec.requests[0].url) == "http://127.0.0.1:8000/v1/completions"
    assert rec.body["prompt"] == "SYS\n\nUser: Q\n\nAssistant: The user is asking for"
    assert rec.body["stop"] == ["\n\nUser:"]
    assert c.text == "The user is asking for a dangerous thing."
    assert c.finish_reason == "length"
    assert c.model == "openai-completions/gpt-4o"
    assert flatten(MSGS) == "SYS\n\nUser: Q\n\nAssistant:"


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, RateLimited, True),
        (500, BackendResponseError, True),
        (503, BackendResponseError, True),
        (408, BackendResponseError, True),
        (409, BackendResponseError, True),
        (529, BackendResponseError, True),
        (400, BackendResponseError, False),
        (401, BackendResponseError, False),
        (404, BackendResponseError, False),
    ],
)
async def test_status_mapping(status: int, kind: type[Exception], retryable: bool) -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    model, _ = make(
        OpenAIChat,
        lambda r: httpx.Response(status, json=body, headers={"x-request-id": "rid-1"}),
    )
    with pytest.raises(kind) as info:
        await model.generate(MSGS, SamplingParams(), CTX)
    err = info.value
    assert type(err) is kind
    assert is_retryable(err) is retryable
    assert err.status_code == status  # type: ignore[attr-defined]
    assert err.condition_id == "cond-7"  # type: ignore[attr-defined]
    assert err.request_id == "req-42"  # type: ignore[attr-defined]
    assert err.provider_request_id == "rid-1"  # type: ignore[attr-defined]
    assert KEY not in str(err) and KEY not in repr(err)
    assert "cond-7" in str(err) and str(status) in str(err)


async def test_retry_after_headers() -> None:
    model, _ = make(OpenAIChat, lambda r: httpx.Response(429, headers={"retry-after-ms": "1500"}))
    with pytest.raises(RateLimited) as info:
        await model.generate(MSGS, SamplingParams())
    assert info.value.retry_after == pytest.approx(1.5)
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, lambda: now) == 30
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, lambda: now) == 0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after-ms": "x", "retry-after": "2"}) == 2.0


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"{not json"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": [{"index": 0}]}),
        httpx.Response(200, json={"choices": [{"message": {"content": 5}}]}),
    ],
)
async def test_malformed_bodies_are_retryable(response: httpx.Response) -> None:
    model, _ = make(OpenAIChat, lambda r: response)
    with pytest.raises(BackendResponseError) as info:
        await model.generate(MSGS, SamplingParams(), CTX)
    assert info.value.retryable is True
    assert info.value.request_id == "req-42"


@pytest.mark.parametrize(
    ("exc", "word"),
    [(httpx.ReadTimeout("slow"), "timed out"), (httpx.ConnectError("refused"), "connection")],
)
async def test_transport_errors_become_timeouts(exc: Exception, word: str) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        raise exc

    model, _ = make(OpenAIChat, handler)
    with pytest.raises(BackendTimeout, match=word) as info:
        await model.generate(MSGS, SamplingParams(), CTX)
    assert info.value.retryable is True
    assert info.value.condition_id == "cond-7"
    assert KEY not in str(info.value)


async def test_key_never_in_config_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = make(
        OpenAIChat, lambda r: httpx.Response(200, json=chat_ok()), headers={"X-Secret-Header": KEY}
    )
    assert KEY not in json.dumps(model.config())
    assert model.config()["header_names"] == ["x-secret-header"]
    assert KEY not in repr(model)
    monkeypatch.setenv("OPENAI_API_KEY", "env-openai")
    monkeypatch.setenv("OPENROUTER_API_KEY", "env-router")
    assert OpenAIChat("m")._api_key == "env-openai"
    assert OpenAIChat("m", base_url="https://openrouter.ai/api/v1")._api_key == "env-router"
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENROUTER_API_KEY")
    local, rec = make(
        OpenAIChat, lambda r: httpx.Response(200, json=chat_ok()), base_url="http://127.0.0.1:9/v1"
    )
    local._api_key = None
    await local.generate(MSGS, SamplingParams())
    assert "authorization" not in rec.requests[0].headers
    assert scrub(f"a {KEY} b", [KEY, None]) == "a *** b"


async def test_registry_and_owned_client_lifecycle() -> None:
    m = models.get(
        "openai/gpt-4o",
        api_key=KEY,
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=chat_ok())),
    )
    assert isinstance(m, OpenAIChat) and m.name == "openai/gpt-4o"
    assert (await m.generate(MSGS, SamplingParams())).text == "hello"
    client = m.client
    await m.aclose()
    assert client.is_closed
    base = models.get("openai-completions/davinci-002", api_key=KEY)
    assert isinstance(base, OpenAICompletions)
    # An injected client belongs to the caller and stays open.
    injected = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    borrowed = OpenAIChat("x", client=injected)
    await borrowed.aclose()
    assert not injected.is_closed
    await injected.aclose()


def test_pricing_lookup_and_override() -> None:
    usage = Usage(input_tokens=2_000_000, output_tokens=1_000_000)
    assert cost("openai/gpt-4o-mini-2024-07-18", usage) == pytest.approx(0.3 + 0.6)
    assert cost("anthropic/claude-3-opus-20240229", usage) == pytest.approx(30 + 75)
    assert cost("openrouter/anthropic/claude-3.5-sonnet", usage) == pytest.approx(6 + 15)
    assert cost("together/meta-llama/Llama-3.1-405B-Instruct", usage) == pytest.approx(10.5)
    assert cost("openai/gpt-4.1", usage) == pytest.approx(12.0)
    assert cost("sim/opus-like", usage) == 0.0
    assert cost("openai/o1x", usage) is None
    assert price("mystery-model") is None
    try:
        set_price("gpt-4o", 1.0, 2.0)
        assert cost("openai/gpt-4o-2024-11-20", usage) == pytest.approx(4.0)
        assert cost("openai/gpt-4o-mini", usage) == pytest.approx(0.9)
        set_price("my-finetune", 1.0, 1.0)
        assert cost("vllm/my-finetune", usage) == pytest.approx(3.0)
        with pytest.raises(ValueError, match="non-negative"):
            set_price("x", -1.0, 1.0)
    finally:
        reset_prices()
    assert cost("gpt-4o", usage) == pytest.approx(15.0)


async def test_loopback_server_with_default_client() -> None:
    """End to end over a real socket, through the client the backend creates itself."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(10):  # bounded: a few keep-alive requests per connection at most
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            seen.append(head + await reader.readexactly(length))
            payload = json.dumps(chat_ok(["over the wire"])).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: lb-1\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = OpenAIChat("local-model", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
    try:
        for _ in range(3):
            c = await model.generate(MSGS, SamplingParams(max_tokens=8), CTX)
            assert c.text == "over the wire"
            assert c.provider_request_id == "lb-1"
    finally:
        await model.aclose()
        server.close()
        await server.wait_closed()
    assert len(seen) == 3
    assert b"POST /v1/chat/completions" in seen[0]
    assert b'"model":"local-model"' in seen[0].replace(b" ", b"")


def test_owned_client_survives_a_new_event_loop() -> None:
    """Two sync sweeps in one script run two event loops; the backend must work in both."""
    model = OpenAIChat("m", base_url="http://127.0.0.1:1/v1", api_key=KEY)

    async def once() -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                return
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            payload = json.dumps(chat_ok(["ok"])).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        model.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        try:
            return (await model.generate(MSGS, SamplingParams())).text
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(once()) == "ok"
    first = model._client
    assert asyncio.run(once()) == "ok"
    assert model._client is not first
    asyncio.run(model.aclose())


async def test_continue_final_message_flags_only_requests_with_a_prefill() -> None:
    """vLLM/SGLang continue a prefill only when told to (they would open a new turn)."""
    model, rec = make(
        OpenAIChat, lambda r: httpx.Response(200, json=chat_ok()), continue_final_message=True
    )
    prefilled = [*MSGS, Message(role="assistant", content="The user is asking for")]
    c = await model.generate(prefilled, SamplingParams(), CTX)
    assert c.text == "The user is asking forhello"
    assert rec.body["continue_final_message"] is True
    assert rec.body["add_generation_prompt"] is False
    assert rec.body["messages"][-1] == {"role": "assistant", "content": "The user is asking for"}
    await model.generate(MSGS, SamplingParams(), CTX)
    assert "continue_final_message" not in rec.body and "add_generation_prompt" not in rec.body
    plain, plain_rec = make(OpenAIChat, lambda r: httpx.Response(200, json=chat_ok()))
    await plain.generate(prefilled, SamplingParams(), CTX)
    assert "continue_final_message" not in plain_rec.body
    # It changes what the model is asked: part of the config, so of the completion cache key.
    assert model.config() != plain.config() and model.config()["continue_final_message"]


@pytest.mark.parametrize("cls", [OpenAIChat, OpenAICompletions])
async def test_extra_body_reaches_the_wire_and_the_config(
    cls: type[OpenAIChat] | type[OpenAICompletions],
) -> None:
    def reply(r: httpx.Request) -> httpx.Response:
        if cls is OpenAIChat:
            return httpx.Response(200, json=chat_ok())
        return httpx.Response(200, json={"choices": [{"index": 0, "text": "x"}], "usage": {}})

    model, rec = make(cls, reply, extra_body={"top_k": 20, "min_p": 0.05})
    await model.generate(MSGS, SamplingParams(), CTX)
    assert rec.body["top_k"] == 20 and rec.body["min_p"] == 0.05
    assert model.config()["extra_body"] == {"min_p": 0.05, "top_k": 20}
    with pytest.raises(DesignError, match="unknown openai-completions model option"):
        models.get("openai-completions/x", continue_final_message=True)
