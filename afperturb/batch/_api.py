"""Provider batch APIs over httpx: OpenAI Batch and Anthropic Message Batches.

Both clients speak the same small protocol, :class:`BatchAPI`: ``submit`` a list of
``(custom_id, request body)`` pairs and get a batch id back, ``poll`` a batch until its
:class:`BatchStatus` is terminal, then read its :class:`ItemResult` rows. They reuse the realtime
backend they wrap for everything else: its ``body(messages, params)`` builder, base URL, auth
headers and :class:`httpx.AsyncClient`, so a batch request is byte-for-byte the realtime one.

Wire formats:

- OpenAI: ``POST /files`` (multipart, ``purpose=batch``, JSONL lines ``{custom_id, method, url,
  body}``), ``POST /batches`` ``{input_file_id, endpoint, completion_window}``, ``GET
  /batches/{id}``; when terminal, ``GET /files/{output_file_id}/content`` and the
  ``error_file_id`` likewise (JSONL ``{custom_id, response: {status_code, body}, error}``).
- Anthropic: ``POST /v1/messages/batches`` ``{requests: [{custom_id, params}]}``, ``GET
  /v1/messages/batches/{id}`` until ``processing_status == "ended"``, then ``GET results_url``
  (JSONL ``{custom_id, result: {type: succeeded|errored|canceled|expired, ...}}``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from afperturb.errors import BackendResponseError, BackendTimeout, DesignError
from afperturb.models.anthropic import anthropic_usage
from afperturb.models.openai import openai_usage, split_prefill
from afperturb.records import Completion, Message, SamplingParams

#: Statuses after which a batch changes no more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", "ended"})
_ANTHROPIC_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


@dataclass(frozen=True)
class BatchStatus:
    """A batch's provider-side state; ``terminal`` once results can be read."""

    batch_id: str
    state: str
    info: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """Whether the provider will change this batch no more."""
        return self.state in TERMINAL


@dataclass(frozen=True)
class ItemResult:
    """One request's outcome: a completion, or an error with whether to resubmit it."""

    custom_id: str
    completion: Completion | None = None
    error: str | None = None
    retryable: bool = True


class BatchAPI(Protocol):
    """What the batch runner needs from a provider's batch endpoint."""

    provider: str

    def body(self, messages: Sequence[Message], params: SamplingParams) -> dict[str, Any]:
        """The request body of one generation (the realtime backend's builder)."""
        ...

    def line_bytes(self, custom_id: str, body: dict[str, Any]) -> int:
        """Bytes one request adds to the upload (for chunking by size)."""
        ...

    async def submit(self, items: Sequence[tuple[str, dict[str, Any]]]) -> BatchStatus:
        """Create one batch of ``(custom_id, body)`` requests."""
        ...

    async def poll(self, batch_id: str) -> BatchStatus:
        """The batch's current state."""
        ...

    async def results(self, status: BatchStatus, prefills: dict[str, str]) -> list[ItemResult]:
        """Every item's outcome once ``status`` is terminal (prefills joined to the text)."""
        ...


class _Base:
    """Shared HTTP plumbing: the wrapped backend's client, base URL and headers."""

    provider = ""

    def __init__(self, backend: Any):
        self.backend = backend
        self.base_url: str = backend.base_url

    def body(self, messages: Sequence[Message], params: SamplingParams) -> dict[str, Any]:
        """The realtime backend's request body, reused as is."""
        out: dict[str, Any] = self.backend.body(messages, params)
        return out

    def headers(self) -> dict[str, str]:
        """The backend's extra and auth headers (never logged)."""
        extra: dict[str, str] = dict(getattr(self.backend, "_extra_headers", {}) or {})
        auth: dict[str, str] = self.backend.auth_headers()
        return {**extra, **auth}

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP call, mapping transport failures and 4xx/5xx to backend errors."""
        client: httpx.AsyncClient = self.backend.client
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        try:
            response = await client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendTimeout(
                f"{self.provider} batch API: {method} {url} failed ({type(exc).__name__})"
            ) from exc
        if response.status_code >= 400:
            raise BackendResponseError(
                f"{self.provider} batch API: {method} {url} -> HTTP {response.status_code}: "
                f"{response.text[:300]}",
                status_code=response.status_code,
                retryable=response.status_code >= 500 or response.status_code == 429,
            )
        return response

    async def call_json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """:meth:`call` and parse a JSON object."""
        response = await self.call(method, url, **kwargs)
        try:
            data = response.json()
        except ValueError as exc:
            raise BackendResponseError(
                f"{self.provider} batch API: {url} returned malformed JSON", retryable=True
            ) from exc
        if not isinstance(data, dict):
            raise BackendResponseError(f"{self.provider} batch API: {url} returned no object")
        return data


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class OpenAIBatch(_Base):
    """The OpenAI Batch API for :class:`~afperturb.models.openai.OpenAIChat` and completions."""

    provider = "openai"

    def __init__(self, backend: Any, completion_window: str = "24h"):
        super().__init__(backend)
        self.endpoint = (
            "/v1/completions"
            if backend.provider == "openai-completions"
            else "/v1/chat/completions"
        )
        self.completion_window = completion_window

    def _line(self, custom_id: str, body: dict[str, Any]) -> str:
        wire = {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}
        return json.dumps(wire, ensure_ascii=False, separators=(",", ":"))

    def line_bytes(self, custom_id: str, body: dict[str, Any]) -> int:
        """UTF-8 bytes of the JSONL line plus its newline."""
        return len(self._line(custom_id, body).encode("utf-8")) + 1

    async def submit(self, items: Sequence[tuple[str, dict[str, Any]]]) -> BatchStatus:
        """Upload the JSONL file, then create the batch on it."""
        data = "".join(self._line(cid, body) + "\n" for cid, body in items).encode("utf-8")
        upload = await self.call_json(
            "POST",
            f"{self.base_url}/files",
            data={"purpose": "batch"},
            files={"file": ("batch.jsonl", data, "application/jsonl")},
        )
        created = await self.call_json(
            "POST",
            f"{self.base_url}/batches",
            json={
                "input_file_id": upload["id"],
                "endpoint": self.endpoint,
                "completion_window": self.completion_window,
            },
        )
        return BatchStatus(str(created["id"]), str(created.get("status", "validating")), created)

    async def poll(self, batch_id: str) -> BatchStatus:
        """``GET /batches/{id}``."""
        data = await self.call_json("GET", f"{self.base_url}/batches/{batch_id}")
        return BatchStatus(batch_id, str(data.get("status")), data)

    async def _file(self, file_id: Any) -> list[dict[str, Any]]:
        if not isinstance(file_id, str) or not file_id:
            return []
        response = await self.call("GET", f"{self.base_url}/files/{file_id}/content")
        return _lines(response.text)

    async def results(self, status: BatchStatus, prefills: dict[str, str]) -> list[ItemResult]:
        """Read the output and error files; a batch that failed outright fails every item."""
        out: list[ItemResult] = []
        for row in [
            *await self._file(status.info.get("output_file_id")),
            *await self._file(status.info.get("error_file_id")),
        ]:
            out.append(self._item(row, prefills))
        return out

    def _item(self, row: dict[str, Any], prefills: dict[str, str]) -> ItemResult:
        cid = str(row.get("custom_id"))
        response = row.get("response") or {}
        code = int(response.get("status_code") or 0)
        error = row.get("error")
        if error or code != 200:
            err = error or (response.get("body") or {}).get("error") or {}
            kind = str(err.get("code") or err.get("type") or f"HTTP {code}")
            message = f"{kind}: {err.get('message', '')}".strip(": ")
            retryable = code == 0 or code >= 500 or code == 429 or "expired" in kind
            return ItemResult(cid, error=message, retryable=retryable)
        body = response.get("body") or {}
        choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
        if not choices:
            return ItemResult(cid, error="response without choices", retryable=True)
        prefill = prefills.get(cid, "")
        texts = []
        for choice in choices:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            texts.append(prefill + (text or ""))
        usage = body.get("usage") or {}
        return ItemResult(
            cid,
            Completion(
                text=texts[0],
                finish_reason=choices[0].get("finish_reason"),
                usage=openai_usage(usage),
                provider_request_id=response.get("request_id") or body.get("id"),
                model=self.backend.name,
                alternatives=tuple(texts[1:]),
            ),
        )


class AnthropicBatch(_Base):
    """Anthropic Message Batches for :class:`~afperturb.models.anthropic.AnthropicMessages`."""

    provider = "anthropic"

    def line_bytes(self, custom_id: str, body: dict[str, Any]) -> int:
        """Bytes the request adds to the JSON payload."""
        wire = {"custom_id": custom_id, "params": body}
        return len(json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode()) + 1

    async def submit(self, items: Sequence[tuple[str, dict[str, Any]]]) -> BatchStatus:
        """``POST /v1/messages/batches`` with every request inline."""
        created = await self.call_json(
            "POST",
            f"{self.base_url}/v1/messages/batches",
            json={"requests": [{"custom_id": cid, "params": body} for cid, body in items]},
        )
        return BatchStatus(str(created["id"]), _anthropic_state(created), created)

    async def poll(self, batch_id: str) -> BatchStatus:
        """``GET /v1/messages/batches/{id}``."""
        data = await self.call_json("GET", f"{self.base_url}/v1/messages/batches/{batch_id}")
        return BatchStatus(batch_id, _anthropic_state(data), data)

    async def results(self, status: BatchStatus, prefills: dict[str, str]) -> list[ItemResult]:
        """Stream the ``results_url`` JSONL."""
        url = status.info.get("results_url")
        if not isinstance(url, str) or not url:
            return []
        response = await self.call("GET", url)
        return [self._item(row, prefills) for row in _lines(response.text)]

    def _item(self, row: dict[str, Any], prefills: dict[str, str]) -> ItemResult:
        cid = str(row.get("custom_id"))
        result = row.get("result") or {}
        kind = result.get("type")
        if kind != "succeeded":
            err = (result.get("error") or {}).get("error") or result.get("error") or {}
            reason = f"{kind}: {err.get('type', '')} {err.get('message', '')}".strip()
            retryable = kind in {"expired", "canceled"} or err.get("type") in {
                "api_error",
                "overloaded_error",
                "rate_limit_error",
            }
            return ItemResult(cid, error=reason, retryable=retryable)
        message = result.get("message") or {}
        text = "".join(
            b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text"
        )
        usage = message.get("usage") or {}
        stop = message.get("stop_reason")
        return ItemResult(
            cid,
            Completion(
                text=prefills.get(cid, "") + text,
                finish_reason=_ANTHROPIC_STOP.get(stop, stop) if isinstance(stop, str) else None,
                usage=anthropic_usage(usage),
                provider_request_id=message.get("id"),
                model=self.backend.name,
            ),
        )


def _anthropic_state(data: dict[str, Any]) -> str:
    # "ended" is the only terminal processing status; expiry shows per item.
    return str(data.get("processing_status", "in_progress"))


def prefill_of(messages: Sequence[Message], params: SamplingParams) -> str:
    """The prefill the provider will not echo back (joined to the reply as realtime does)."""
    _, prefill = split_prefill(messages, params)
    return prefill or ""


def batch_api_for(backend: Any) -> BatchAPI:
    """The batch client for a realtime backend, or a DesignError naming the ones that have one."""
    provider = getattr(backend, "provider", None)
    if provider in {"openai", "openai-completions"} and hasattr(backend, "body"):
        return OpenAIBatch(backend)
    if provider == "anthropic" and hasattr(backend, "body"):
        return AnthropicBatch(backend)
    name = getattr(backend, "name", type(backend).__name__)
    raise DesignError(
        f"mode='batch' needs a backend with a batch API; got {name!r}; valid providers: "
        "'anthropic', 'openai', 'openai-completions' (use mode='realtime' for the others)"
    )


def now_iso() -> str:
    """UTC time for bookkeeping rows, with microseconds so rows sort by creation."""
    return datetime.now(UTC).isoformat()


__all__ = [
    "TERMINAL",
    "AnthropicBatch",
    "BatchAPI",
    "BatchStatus",
    "ItemResult",
    "OpenAIBatch",
    "batch_api_for",
    "now_iso",
    "prefill_of",
]
