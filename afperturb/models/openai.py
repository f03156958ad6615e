"""OpenAI-compatible backends over httpx: Chat Completions and legacy Completions (base models).

:class:`OpenAIChat` talks to ``/chat/completions`` on api.openai.com or any compatible server
(vLLM, SGLang, OpenRouter, Together, Ollama) through ``base_url``. :class:`OpenAICompletions`
talks to ``/completions`` for base models, flattening the chat into one document.

Prefill: when the message list ends with an assistant message (or ``params.prefill`` is set),
chat sends it as the last assistant turn and the completions backend ends the document with it.
In both cases the returned ``Completion.text`` is **prefill + generated text**, so the transcript
a classifier reads, and the history a ``<NEXT/>`` continuation sends, is the whole reply.

Reasoning models: ``temperature=None`` sends no temperature; ``reasoning_tokens`` switches to
``max_completion_tokens`` (answer budget + reasoning budget) and a ``reasoning_effort`` bucket
(≤ 2,048 low, ≤ 8,192 medium, else high).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from afperturb.models._http import HTTPBackend, env_key
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Message, SamplingParams, Usage

#: Document format of :class:`OpenAICompletions`: system text first, then labelled turns.
ROLE_LABELS = {"user": "User", "assistant": "Assistant"}
#: Stop sequence added for base models when ``params.stop`` is empty, so a base model does not
#: go on to write the next user turn itself.
DEFAULT_DOCUMENT_STOP = ("\n\nUser:",)


def reasoning_effort(reasoning_tokens: int) -> str:
    """OpenAI's effort bucket for a reasoning-token budget."""
    if reasoning_tokens <= 2048:
        return "low"
    if reasoning_tokens <= 8192:
        return "medium"
    return "high"


def split_prefill(
    messages: Sequence[Message], params: SamplingParams
) -> tuple[list[Message], str | None]:
    """Split a trailing assistant message (or ``params.prefill``) off as the prefill."""
    msgs = list(messages)
    if msgs and msgs[-1].role == "assistant":
        return msgs[:-1], msgs[-1].content
    return msgs, params.prefill


def flatten(messages: Sequence[Message], prefill: str | None = None) -> str:
    r"""Render a chat as one document for a base model.

    System messages come first as plain text; each later turn is ``"User: ..."`` or
    ``"Assistant: ..."``, separated by blank lines; the document ends with ``"Assistant:"``
    followed by the prefill (if any), so the model continues the assistant's turn.

    Example:
        >>> flatten([Message(role="system", content="S"), Message(role="user", content="Q")],
        ...         prefill="The user is asking for")
        'S\n\nUser: Q\n\nAssistant: The user is asking for'
    """
    parts: list[str] = []
    for m in messages:
        if m.role == "system":
            parts.append(m.content)
        else:
            parts.append(f"{ROLE_LABELS[m.role]}: {m.content}")
    tail = f"{ROLE_LABELS['assistant']}:" + (f" {prefill}" if prefill else "")
    parts.append(tail)
    return "\n\n".join(parts)


def openai_usage(usage: Any) -> Usage:
    """OpenAI's usage object in afperturb's convention.

    ``prompt_tokens_details.cached_tokens`` (already part of ``prompt_tokens``) is the cache
    read; OpenAI bills no cache writes.
    """
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_tokens=int(cached or 0),
    )


def prompt_cache_key(messages: Sequence[Message]) -> str:
    """The ``prompt_cache_key`` of a request: a digest of its system prompt.

    Every request of one condition shares its system prompt (the long part), so they share a
    key and OpenAI routes them to the same cache; conditions with other prompts get others.
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    return "afp-" + hashlib.sha256(system.encode("utf-8")).hexdigest()[:16]


class _OpenAIBase(HTTPBackend):
    """Shared by the chat and completions backends.

    ``extra_body`` is merged into every request's JSON (a server's own parameters, e.g.
    vLLM's ``{"top_k": 20}``); it is part of :meth:`config`, so it is part of every completion's
    cache key: it changes what the model is asked.
    """

    default_base_url = "https://api.openai.com/v1"
    key_env = ("OPENAI_API_KEY",)
    #: The endpoint under ``base_url``.
    path: ClassVar[str] = ""

    def __init__(
        self, model: str, *, extra_body: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        super().__init__(model, **options)  # HTTPBackend's options (checked by models.get)
        self.extra_body: dict[str, Any] = dict(extra_body or {})

    def config(self) -> dict[str, Any]:
        """Provider, model, base URL, header names, and ``extra_body`` when given."""
        cfg = super().config()
        if self.extra_body:
            cfg["extra_body"] = dict(sorted(self.extra_body.items()))
        return cfg

    def body(self, messages: Sequence[Message], params: SamplingParams) -> dict[str, Any]:
        """The JSON body for one request (subclasses; public so the batch mode can reuse it)."""
        raise NotImplementedError

    def _choice_text(
        self, choice: dict[str, Any], context: GenerationContext | None, request_id: str | None
    ) -> str:
        """The generated text of one choice (subclasses), without the prefill."""
        raise NotImplementedError

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        """POST :attr:`path`; parse text (prefill first), usage, finish reason and request id."""
        _, prefill = split_prefill(messages, params)
        data, latency, request_id = await self.post_json(
            self.path, self.body(messages, params), context
        )
        choices = self._choices(data, context, request_id)
        texts = [(prefill or "") + self._choice_text(c, context, request_id) for c in choices]
        return self._completion(texts, choices[0].get("finish_reason"), data, latency, request_id)

    def _key_from_env(self) -> str | None:
        if "openrouter" in self.base_url:
            return env_key("OPENROUTER_API_KEY", "OPENAI_API_KEY")
        return env_key(*self.key_env)

    def auth_headers(self) -> dict[str, str]:
        """Bearer token when a key is known (local servers often need none)."""
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _sampling(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.n > 1:
            body["n"] = params.n
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _choices(
        self, data: dict[str, Any], context: GenerationContext | None, request_id: str | None
    ) -> list[dict[str, Any]]:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            self.bad_body("no choices", context, request_id)
        if not all(isinstance(c, dict) for c in choices):
            self.bad_body("a choice is not an object", context, request_id)
        return sorted(choices, key=lambda c: c.get("index", 0))

    def _completion(
        self,
        texts: list[str],
        finish: Any,
        data: dict[str, Any],
        latency: float,
        request_id: str | None,
    ) -> Completion:
        return Completion(
            text=texts[0],
            finish_reason=finish if isinstance(finish, str) else None,
            usage=openai_usage(data.get("usage")),
            latency_s=latency,
            provider_request_id=request_id,
            model=self.name,
            alternatives=tuple(texts[1:]),
        )


class OpenAIChat(_OpenAIBase):
    """Chat Completions on OpenAI or any OpenAI-compatible server (``base_url``).

    The key comes from ``OPENAI_API_KEY`` (``OPENROUTER_API_KEY`` when ``base_url`` is
    OpenRouter) unless ``api_key`` is given; without one no ``Authorization`` header is sent.

    **Prompt caching**: OpenAI caches prompt prefixes of 1,024 tokens or more by itself;
    ``prompt_cache_key`` (a digest of the system prompt, :func:`prompt_cache_key`) sends one
    condition's requests to the same cache. On by default for OpenAI's own API
    (``prompt_caching=None``), off for other ``base_url`` servers unless ``prompt_caching=True``.
    The usage's ``cached_tokens`` become :attr:`Usage.cache_read_tokens`. Not part of
    :meth:`config`: completion cache keys are the same with it on or off.

    A prefill is sent as a final assistant message. Servers that apply a chat template would
    start a *new* assistant turn after it; ``continue_final_message=True`` adds vLLM's (and
    SGLang's) ``"continue_final_message": true, "add_generation_prompt": false`` to requests
    that carry a prefill, so the model continues it (docs/local-models.md).

    Example:
        >>> m = OpenAIChat("gpt-4o", api_key="sk-test")
        >>> m.config()
        {'provider': 'openai', 'model': 'gpt-4o', 'base_url': 'https://api.openai.com/v1'}
    """

    provider = "openai"
    path = "/chat/completions"

    def __init__(
        self,
        model: str,
        *,
        continue_final_message: bool = False,
        prompt_caching: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.continue_final_message = continue_final_message
        # None: on for OpenAI's own API (other servers may not know the field), off elsewhere.
        self.prompt_caching = (
            self.base_url == self.default_base_url if prompt_caching is None else prompt_caching
        )

    def config(self) -> dict[str, Any]:
        """As the base's, with ``continue_final_message`` when it is on."""
        cfg = super().config()
        if self.continue_final_message:
            cfg["continue_final_message"] = True
        return cfg

    def body(self, messages: Sequence[Message], params: SamplingParams) -> dict[str, Any]:
        """The JSON body for one request (public so the batch mode can reuse it)."""
        history, prefill = split_prefill(messages, params)
        wire = [{"role": m.role, "content": m.content} for m in history]
        if prefill is not None:
            wire.append({"role": "assistant", "content": prefill})
        body: dict[str, Any] = {"model": self.model, "messages": wire}
        if params.reasoning_tokens is not None:
            body["max_completion_tokens"] = params.max_tokens + params.reasoning_tokens
            body["reasoning_effort"] = reasoning_effort(params.reasoning_tokens)
        else:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(self._sampling(params))
        if prefill is not None and self.continue_final_message:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if self.prompt_caching:
            body["prompt_cache_key"] = prompt_cache_key(history)
        body.update(self.extra_body)
        return body

    def _choice_text(
        self, choice: dict[str, Any], context: GenerationContext | None, request_id: str | None
    ) -> str:
        message = choice.get("message")
        if not isinstance(message, dict):
            self.bad_body("choice without a message", context, request_id)
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            self.bad_body("message content is not a string", context, request_id)
        return content or ""


class OpenAICompletions(_OpenAIBase):
    """Legacy ``/completions`` for base models: the chat is flattened by :func:`flatten`.

    ``params.stop`` defaults to :data:`DEFAULT_DOCUMENT_STOP` when empty.
    """

    provider = "openai-completions"
    path = "/completions"

    def body(self, messages: Sequence[Message], params: SamplingParams) -> dict[str, Any]:
        """The JSON body for one request."""
        history, prefill = split_prefill(messages, params)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": flatten(history, prefill),
            "max_tokens": params.max_tokens,
            "stop": list(params.stop or DEFAULT_DOCUMENT_STOP),
        }
        body.update(self._sampling(params))
        body.update(self.extra_body)
        return body

    def _choice_text(
        self, choice: dict[str, Any], context: GenerationContext | None, request_id: str | None
    ) -> str:
        text = choice.get("text")
        if not isinstance(text, str):
            self.bad_body("choice without text", context, request_id)
        return text


__all__ = [
    "DEFAULT_DOCUMENT_STOP",
    "ROLE_LABELS",
    "OpenAIChat",
    "OpenAICompletions",
    "flatten",
    "openai_usage",
    "prompt_cache_key",
    "reasoning_effort",
    "split_prefill",
]
