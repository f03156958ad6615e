"""Anthropic Messages API over httpx (no SDK).

System messages are joined into the top-level ``system`` field. A trailing assistant message
(or ``params.prefill``) is sent as the prefill, and the returned ``Completion.text`` is
**prefill + generated text** (the API returns only the continuation), so the transcript and any
``<NEXT/>`` history hold the whole reply, as with the OpenAI backends.

``reasoning_tokens`` turns on extended thinking (``thinking.budget_tokens``; ``max_tokens``
grows by the budget and temperature is not sent, as the API requires); thinking blocks are not
part of the returned text. The API has no ``n``: ``n > 1`` sends ``n`` requests concurrently and
returns the extra answers as ``alternatives`` with summed usage.
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


class AnthropicMessages(HTTPBackend):
    """``POST /v1/messages``; the key comes from ``ANTHROPIC_API_KEY`` unless passed.

    Example:
        >>> AnthropicMessages("claude-3-opus-20240229", api_key="k").config()["base_url"]
        'https://api.anthropic.com'
    """

    provider = "anthropic"
    default_base_url = "https://api.anthropic.com"
    key_env = ("ANTHROPIC_API_KEY",)

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
        wire = [{"role": m.role, "content": m.content} for m in history if m.role != "system"]
        if prefill:
            wire.append({"role": "assistant", "content": prefill})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": wire,
            "max_tokens": params.max_tokens,
        }
        if system:
            body["system"] = system
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
        usage = data.get("usage") or {}
        stop = data.get("stop_reason")
        return Completion(
            text=prefill + "".join(texts),
            finish_reason=_STOP_REASONS.get(stop, stop) if isinstance(stop, str) else None,
            usage=Usage(
                input_tokens=int(usage.get("input_tokens") or 0),
                output_tokens=int(usage.get("output_tokens") or 0),
            ),
            latency_s=latency,
            provider_request_id=request_id,
            model=self.name,
        )


__all__ = ["ANTHROPIC_VERSION", "AnthropicMessages"]
