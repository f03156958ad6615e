"""Anthropic Messages API over httpx (no SDK).

System messages are joined into the top-level ``system`` field. A trailing assistant message
(or ``params.prefill``) is sent as the prefill, and the returned ``Completion.text`` is
**prefill + generated text** (the API returns only the continuation), so the transcript and any
``<NEXT/>`` history hold the whole reply, as with the OpenAI backends.

``reasoning_tokens`` turns on extended thinking (``thinking.budget_tokens``; ``max_tokens``
grows by the budget and temperature is not sent, as the API requires); thinking blocks are not
part of the returned text. The API has no ``n``: ``n > 1`` sends ``n`` requests concurrently and
returns the extra answers as ``alternatives`` with summed usage.

**Prompt caching** (on by default; ``prompt_caching=False`` turns it off): the system prompt is
sent as one text block with ``cache_control: {"type": "ephemeral"}``, and in a conversation
that continues (``<NEXT/>`` turns) the last assistant turn carries a second breakpoint, so each
turn reads the prefix the previous one wrote. Prefixes under the model's minimum (1,024 tokens;
2,048 for Haiku models) are simply not cached. The usage's ``cache_creation_input_tokens`` and
``cache_read_input_tokens`` become :attr:`Usage.cache_write_tokens` and
:attr:`Usage.cache_read_tokens` (and are added into ``input_tokens``). Caching changes the
bill, not the question: it is not part of :meth:`config`, so completion cache keys are the
same with it on or off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from afperturb.models._http import HTTPBackend
from afperturb.models.base import GenerationContext
from afperturb.models.openai import split_prefill
from afperturb.records import Completion, Message, SamplingParams, Usage

ANTHROPIC_VERSION = "2023-06-01"
#: Anthropic stop reasons → the OpenAI vocabulary the rest of afperturb uses.
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


#: The cache breakpoint Anthropic reads: the prefix up to the marked block is cached 5 minutes.
CACHE_CONTROL = {"type": "ephemeral"}


def anthropic_usage(usage: Any) -> Usage:
    """Anthropic's usage object in afperturb's convention (cache reads and writes included)."""
    usage = usage if isinstance(usage, dict) else {}
    read = int(usage.get("cache_read_input_tokens") or 0)
    write = int(usage.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(usage.get("input_tokens") or 0) + read + write,
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


class AnthropicMessages(HTTPBackend):
    """``POST /v1/messages``; the key comes from ``ANTHROPIC_API_KEY`` unless passed.

    Example:
        >>> AnthropicMessages("claude-3-opus-20240229", api_key="k").config()["base_url"]
        'https://api.anthropic.com'
    """

    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"
    key_env = ("ANTHROPIC_API_KEY",)

    def __init__(self, model: str, *, prompt_caching: bool = True, **options: Any) -> None:
        super().__init__(model, **options)  # HTTPBackend's options (checked by models.get)
        self.prompt_caching = prompt_caching

    def auth_headers(self) -> dict[str, str]:
        """``x-api-key`` and the API version header."""
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def body(self, messages: Sequence[Message], params: SamplingParams) -> dict[str, Any]:
        """The JSON body for one request (public so the batch mode can reuse it)."""
        history, prefill = split_prefill(messages, params)
        system = "\n\n".join(m.content for m in history if m.role == "system")
        wire: list[dict[str, Any]] = [
            {"role": m.role, "content": m.content} for m in history if m.role != "system"
        ]
        if self.prompt_caching:
            _mark_last_assistant(wire)
        if prefill:
            wire.append({"role": "assistant", "content": prefill})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": wire,
            "max_tokens": params.max_tokens,
        }
        if system:
            body["system"] = (
                [{"type": "text", "text": system, "cache_control": CACHE_CONTROL}]
                if self.prompt_caching
                else system
            )
        if params.reasoning_tokens is not None:
            body["thinking"] = {"type": "enabled", "budget_tokens": params.reasoning_tokens}
            body["max_tokens"] = params.max_tokens + params.reasoning_tokens
        elif params.temperature is not None:
            body["temperature"] = params.temperature
        if params.top_p is not None and params.reasoning_tokens is None:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        return body

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        """One request per vote; see the module docstring for prefill and ``n``."""
        body = self.body(messages, params)
        _, prefill = split_prefill(messages, params)
        if params.n == 1:
            return await self._one(body, prefill or "", context)
        parts = await asyncio.gather(
            *(self._one(body, prefill or "", context) for _ in range(params.n))
        )
        first = parts[0]
        return first.model_copy(
            update={
                "alternatives": tuple(p.text for p in parts[1:]),
                "usage": Usage(
                    input_tokens=sum(p.usage.input_tokens for p in parts),
                    output_tokens=sum(p.usage.output_tokens for p in parts),
                    cache_read_tokens=sum(p.usage.cache_read_tokens for p in parts),
                    cache_write_tokens=sum(p.usage.cache_write_tokens for p in parts),
                ),
                "latency_s": max(p.latency_s for p in parts),
            }
        )

    async def _one(
        self, body: dict[str, Any], prefill: str, context: GenerationContext | None
    ) -> Completion:
        data, latency, request_id = await self.post_json("/v1/messages", body, context)
        content = data.get("content")
        if not isinstance(content, list):
            self.bad_body("no content list", context, request_id)
        texts: list[str] = []
        for block in content:
            if not isinstance(block, dict):
                self.bad_body("a content block is not an object", context, request_id)
            if block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    self.bad_body("text block without text", context, request_id)
                texts.append(text)
        stop = data.get("stop_reason")
        return Completion(
            text=prefill + "".join(texts),
            finish_reason=_STOP_REASONS.get(stop, stop) if isinstance(stop, str) else None,
            usage=anthropic_usage(data.get("usage")),
            latency_s=latency,
            provider_request_id=request_id,
            model=self.name,
        )


def _mark_last_assistant(wire: list[dict[str, Any]]) -> None:
    """A second breakpoint on the last assistant turn of a continuing conversation.

    In turn k of a ``<NEXT/>`` continuation everything up to the previous assistant reply is
    the prefix turn k + 1 shares; marking it lets each turn read what the last one wrote.
    """
    for message in reversed(wire):
        if message["role"] == "assistant":
            text = message["content"]
            if isinstance(text, str) and text:  # an empty text block is refused by the API
                message["content"] = [
                    {"type": "text", "text": text, "cache_control": CACHE_CONTROL}
                ]
            return


__all__ = ["ANTHROPIC_VERSION", "CACHE_CONTROL", "AnthropicMessages", "anthropic_usage"]
