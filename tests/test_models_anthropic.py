"""Anthropic Messages backend against httpx.MockTransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

import afperturb.models as models
from afperturb.errors import BackendResponseError, RateLimited
from afperturb.models.anthropic import ANTHROPIC_VERSION, AnthropicMessages
from afperturb.models.base import GenerationContext
from afperturb.records import Message, Request, SamplingParams

KEY = "sk-ant-SECRET-sentinel-987"
MSGS = [
    Message(role="system", content="SYS1"),
    Message(role="system", content="SYS2"),
    Message(role="user", content="Q"),
]


def ok(text: str = "answer", **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "content": [
            {"type": "thinking", "thinking": "hidden", "signature": "x"},
            {"type": "text", "text": text},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 30, "output_tokens": 7},
        **extra,
    }


def make(handler: Any) -> tuple[AnthropicMessages, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request)
        return response

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return AnthropicMessages("claude-3-opus-20240229", api_key=KEY, client=client), seen


async def test_body_headers_system_and_parse() -> None:
    model, seen = make(lambda r: httpx.Response(200, json=ok(), headers={"request-id": "req_011"}))
    params = SamplingParams(temperature=0.0, max_tokens=64, stop=("</OUTPUT>",), top_p=0.9)
    c = await model.generate(MSGS, params)
    req = seen[0]
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == ANTHROPIC_VERSION
    assert "authorization" not in req.headers
    assert json.loads(req.content) == {
        "model": "claude-3-opus-20240229",
        # The system prompt is one cache breakpoint (prompt caching is on by default).
        "system": [
            {"type": "text", "text": "SYS1\n\nSYS2", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [{"role": "user", "content": "Q"}],
        "max_tokens": 64,
        "temperature": 0.0,
        "top_p": 0.9,
        "stop_sequences": ["</OUTPUT>"],
    }
    assert c.text == "answer"
    assert c.finish_reason == "stop"
    assert (c.usage.input_tokens, c.usage.output_tokens) == (30, 7)
    assert c.provider_request_id == "req_011"
    assert c.model == "anthropic/claude-3-opus-20240229"


async def test_prefill_sent_and_prepended() -> None:
    model, seen = make(lambda r: httpx.Response(200, json=ok(" asking for X")))
    msgs = [*MSGS, Message(role="assistant", content="The user is")]
    c = await model.generate(msgs, SamplingParams())
    body = json.loads(seen[0].content)
    assert body["messages"][-1] == {"role": "assistant", "content": "The user is"}
    assert c.text == "The user is asking for X"
    assert c.provider_request_id == "msg_01"


async def test_thinking_budget_drops_temperature() -> None:
    model, seen = make(lambda r: httpx.Response(200, json=ok(stop_reason="max_tokens")))
    c = await model.generate(MSGS, SamplingParams(max_tokens=1000, reasoning_tokens=2048))
    body = json.loads(seen[0].content)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 3048
    assert "temperature" not in body
    assert c.text == "answer"
    assert c.finish_reason == "length"
    none_temp, seen2 = make(lambda r: httpx.Response(200, json=ok()))
    await none_temp.generate(MSGS, SamplingParams(temperature=None))
    assert "temperature" not in json.loads(seen2[0].content)


async def test_n_sends_n_requests() -> None:
    counter = iter(range(100))
    model, seen = make(lambda r: httpx.Response(200, json=ok(f"v{next(counter)}")))
    c = await model.generate(MSGS, SamplingParams(n=3))
    assert len(seen) == 3
    assert sorted([c.text, *c.alternatives]) == ["v0", "v1", "v2"]
    assert c.usage.input_tokens == 90 and c.usage.output_tokens == 21


async def test_errors_and_no_key_leak() -> None:
    ctx = GenerationContext(request=Request(id="rq", text="t"))
    model, _ = make(
        lambda r: httpx.Response(
            429, json={"error": {"message": f"slow down {KEY}"}}, headers={"retry-after": "3"}
        )
    )
    with pytest.raises(RateLimited) as info:
        await model.generate(MSGS, SamplingParams(), ctx)
    assert info.value.retry_after == 3.0
    assert info.value.request_id == "rq"
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    overloaded, _ = make(lambda r: httpx.Response(529, json={"type": "error"}))
    with pytest.raises(BackendResponseError) as info2:
        await overloaded.generate(MSGS, SamplingParams())
    assert info2.value.retryable is True
    bad, _ = make(lambda r: httpx.Response(200, json={"content": "nope"}))
    with pytest.raises(BackendResponseError, match="content") as info3:
        await bad.generate(MSGS, SamplingParams())
    assert info3.value.retryable is True
    assert KEY not in json.dumps(model.config()) and KEY not in repr(model)


def test_registry_and_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-ant")
    m = models.get("anthropic/claude-sonnet-4-20250514")
    assert isinstance(m, AnthropicMessages)
    assert m.auth_headers()["x-api-key"] == "env-ant"
    assert m.config() == {
        "provider": "anthropic",
        "model": "claude-sonnet-4-20250514",
        "base_url": "https://api.anthropic.com",
    }
