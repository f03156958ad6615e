"""Shared plumbing of the HTTP backends: client lifetime, error mapping, retry hints, secrets.

Every provider backend (:mod:`~afperturb.models.openai`, :mod:`~afperturb.models.anthropic`)
subclasses :class:`HTTPBackend`. It only uses the public :class:`httpx.AsyncClient` API, so a
faster transport can be slotted in behind ``httpx.AsyncBaseTransport`` (pass ``transport=``, or
a whole ``client=``) without touching the backends.

Status mapping, in one place so the sweep and the judges agree:

====================================  ====================================================
429                                   :class:`RateLimited` (``retry_after`` from the headers)
408, 409, 5xx, 529                    :class:`BackendResponseError`, retryable
other 4xx                             :class:`BackendResponseError`, not retryable
malformed JSON or missing fields      :class:`BackendResponseError`, retryable
timeouts, connection errors           :class:`BackendTimeout`
====================================  ====================================================

API keys live only in request headers built per call; they never reach an error message, a
``repr`` or :meth:`HTTPBackend.config` (and any echo of the key in a provider's error body is
scrubbed before it is quoted).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

import httpx

from afperturb.errors import BackendError, BackendResponseError, BackendTimeout, RateLimited
from afperturb.models._transport import RawResponse, _LeanAsyncClient, make_async_client
from afperturb.models.base import GenerationContext

#: Statuses worth retrying besides 429 and 5xx (request timeout, conflict, Anthropic overload).
RETRYABLE_STATUS = frozenset({408, 409, 529})
#: Defaults for a client we create ourselves: generous read timeout (reasoning models are slow),
#: many connections (a sweep keeps hundreds of requests in flight).
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=30.0)
#: Connection slots of a backend's own client before a sweep asks for more.
DEFAULT_CONNECTIONS = 512
_SNIPPET = 300


def env_key(*names: str) -> str | None:
    """The first non-empty environment variable among ``names``."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def parse_retry_after(
    headers: Mapping[str, str], now: Callable[[], datetime] | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` (seconds or an HTTP date).

    Example:
        >>> parse_retry_after({"retry-after": "1.5"})
        1.5
        >>> parse_retry_after({"retry-after-ms": "250"})
        0.25
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


#: httpx's JSON settings for ``json=`` bodies (0.28): compact, UTF-8, no NaN.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_escape: Callable[[str], str] = json.encoder.encode_basestring  # C when available
#: JSON of long strings seen lately: a condition's ~3 kB system prompt repeats in every request.
_LONG_STRINGS: dict[str, str] = {}
_LONG_MIN_CHARS = 512
_LONG_MAX_ENTRIES = 1024


def encode_json(value: Any) -> bytes:
    """``value`` as the exact bytes httpx sends for ``json=value``, long strings memoised.

    Encoding a request body with :mod:`json` costs ~13 µs for a 3 kB prompt; much of it
    is escaping the system prompt, which is the same string for every request of a
    condition. Dicts and lists are joined here and long strings come from a small memo, so a
    request costs less (``benchmarks/hot_paths.py``, rows ``json.dumps`` and ``encode_json``).
    Anything else (numbers, short strings, non-string keys) is encoded by :mod:`json` with
    httpx's settings; a test checks the bytes equal ``json.dumps``'s.
    """
    return _encode(value).encode("utf-8")


def _encode(value: Any) -> str:
    # Exact types first (json's own C escaper for strings, int/float reprs as json writes
    # them); subclasses, non-string keys and anything unusual go to the JSONEncoder.
    kind = type(value)
    if kind is str:
        if len(value) < _LONG_MIN_CHARS:
            return _escape(value)
        found = _LONG_STRINGS.get(value)
        if found is None:
            if len(_LONG_STRINGS) >= _LONG_MAX_ENTRIES:
                _LONG_STRINGS.clear()
            found = _LONG_STRINGS[value] = _escape(value)
        return found
    if kind is dict:
        if all(type(k) is str for k in value):
            return "{" + ",".join([_escape(k) + ":" + _encode(v) for k, v in value.items()]) + "}"
    elif kind is list or kind is tuple:
        return "[" + ",".join([_encode(v) for v in value]) + "]"
    elif kind is int:
        return int.__repr__(value)
    elif kind is float and math.isfinite(value):
        return float.__repr__(value)
    elif value is None:
        return "null"
    return _JSON.encode(value)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret in ``text`` by ``***`` (providers sometimes echo keys back)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class HTTPBackend:
    """Base of the provider backends: owns (or borrows) the client and maps failures to errors.

    Args:
        model: The provider's model name (``gpt-4o``), without the ``provider/`` prefix.
        base_url: API root; each subclass has its own default.
        api_key: Overrides the provider's environment variable.
        headers: Extra headers for every request (e.g. OpenRouter's ``HTTP-Referer``).
        client: An :class:`httpx.AsyncClient` to use; the caller keeps ownership.
        transport: A transport for the client we create when ``client`` is None.
        timeout: Timeout for the client we create (ignored with ``client``).
        proxy: A proxy URL for the client we create; None honours ``HTTP(S)_PROXY`` /
            ``ALL_PROXY`` / ``NO_PROXY`` (:func:`afperturb.models._transport.proxy_for`).
            Not part of :meth:`config`: it changes the route, not what the model is asked.
    """

    provider: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    key_env: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | httpx.Timeout | None = None,
        proxy: str | None = None,
    ) -> None:
        self.model = model
        self.name = f"{self.provider}/{model}"
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._api_key = api_key if api_key is not None else self._key_from_env()
        self._extra_headers = dict(headers or {})
        self._client = client
        self._owns_client = client is None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._transport = transport
        self._timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
        self._proxy = proxy
        self._connections = DEFAULT_CONNECTIONS
        self._headers_cache: tuple[str | None, dict[str, str]] | None = None

    def _key_from_env(self) -> str | None:
        return env_key(*self.key_env)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} base_url={self.base_url!r}>"

    def config(self) -> dict[str, Any]:
        """Provider, model and base URL; header *names* only, never values or keys."""
        cfg: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
        }
        if self._extra_headers:
            cfg["header_names"] = sorted(k.lower() for k in self._extra_headers)
        return cfg

    @property
    def client(self) -> httpx.AsyncClient:
        """The client in use, created on first use when none was injected."""
        client = self._client
        loop = _running_loop()
        # An owned client whose event loop has finished (a second sync sweep in one script)
        # cannot be reused or closed from here, so start afresh; injected clients are the
        # caller's business, and so is a transport the caller passed in.
        stale = (
            self._owns_client
            and self._transport is None
            and loop is not None
            and loop is not self._client_loop
        )
        if client is None or stale:
            if client is not None and loop is not None:
                _retire(client, loop)
            client = _default_client(self._timeout, self._transport, self._connections, self._proxy)
            self._client = client
            self._client_loop = loop
        return client

    def reserve_connections(self, n: int) -> None:
        """Let at least ``n`` requests be on the wire at once.

        The sweep calls it with its concurrency, so its requests never queue for a connection
        slot inside the client (a wait that would count against the attempt deadline).
        Applies to the client this backend creates (now or later); an injected client or
        transport is the caller's to size.
        """
        self._connections = max(self._connections, n)
        client = self._client
        if client is None or not self._owns_client or self._transport is not None:
            return
        engine = getattr(client, "_engine", None) or getattr(client, "_transport", None)
        reserve = getattr(engine, "reserve", None)
        if callable(reserve):
            reserve(self._connections)

    async def aclose(self) -> None:
        """Close the client if we created it (an injected client belongs to the caller)."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def auth_headers(self) -> dict[str, str]:
        """Provider-specific authentication headers (subclasses override)."""
        return {}

    def request_headers(self) -> dict[str, str]:
        """Headers of every request: extra, auth and JSON content type (built once per key)."""
        key = self._api_key
        cached = self._headers_cache
        if cached is None or cached[0] != key:
            headers = {**self._extra_headers, **self.auth_headers()}
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
            cached = self._headers_cache = (key, headers)
        return cached[1]

    async def post_json(
        self, path: str, body: dict[str, Any], context: GenerationContext | None
    ) -> tuple[dict[str, Any], float, str | None]:
        """POST ``body``; return (parsed JSON object, latency seconds, provider request id).

        The body is encoded once here (:func:`encode_json`: the bytes httpx's ``json=`` would
        send); our lean client then posts it without building httpx objects
        (:meth:`~afperturb.models._transport._LeanAsyncClient.post_bytes`), any other
        :class:`httpx.AsyncClient` (a ``MockTransport`` in tests) through ``client.post``.
        """
        payload = encode_json(body)
        headers = self.request_headers()
        url = self.base_url + path
        client = self.client
        start = time.perf_counter()
        response: httpx.Response | RawResponse
        try:
            if isinstance(client, _LeanAsyncClient):
                response = await client.post_bytes(url, payload, headers)
            else:
                response = await client.post(url, content=payload, headers=headers)
        except httpx.TimeoutException as exc:
            self._fail(BackendTimeout, f"timed out ({type(exc).__name__})", context, exc=exc)
        except httpx.TransportError as exc:
            self._fail(
                BackendTimeout, f"connection failed ({type(exc).__name__})", context, exc=exc
            )
        except httpx.DecodingError as exc:  # ReplyTooLarge, or a body that does not decode
            self._fail(
                BackendResponseError, f"reply body: {exc}", context, retryable=False, exc=exc
            )
        latency = time.perf_counter() - start
        found = response.headers
        if context is not None and context.on_headers is not None:
            context.on_headers(found)
        request_id = found.get("x-request-id") or found.get("request-id")
        if response.status_code >= 400:
            raise self._status_error(response, context, request_id)
        try:
            data = response.json()
        except ValueError as exc:
            self._fail(
                BackendResponseError,
                "malformed JSON body",
                context,
                status=response.status_code,
                request_id=request_id,
                retryable=True,
                exc=exc,
            )
        if not isinstance(data, dict):
            self._fail(
                BackendResponseError,
                f"expected a JSON object, got {type(data).__name__}",
                context,
                status=response.status_code,
                request_id=request_id,
                retryable=True,
            )
        if request_id is None and isinstance(data.get("id"), str):
            request_id = data["id"]
        return data, latency, request_id

    def _status_error(
        self,
        response: httpx.Response | RawResponse,
        context: GenerationContext | None,
        request_id: str | None,
    ) -> BackendError:
        status = response.status_code
        snippet = scrub(response.text[:_SNIPPET], [self._api_key])
        message = self._message(f"HTTP {status}: {snippet}", context, request_id)
        ids = _ids(context)
        if status == 429:
            return RateLimited(
                message,
                retry_after=parse_retry_after(response.headers),
                status_code=status,
                provider_request_id=request_id,
                **ids,
            )
        retryable = status >= 500 or status in RETRYABLE_STATUS
        return BackendResponseError(
            message,
            status_code=status,
            provider_request_id=request_id,
            retryable=retryable,
            **ids,
        )

    def bad_body(
        self, what: str, context: GenerationContext | None, request_id: str | None
    ) -> NoReturn:
        """Raise the retryable error for a 200 response missing the fields we need."""
        self._fail(
            BackendResponseError,
            f"unexpected response body: {what}",
            context,
            status=200,
            request_id=request_id,
            retryable=True,
        )

    def _message(self, what: str, context: GenerationContext | None, request_id: str | None) -> str:
        ids = _ids(context)
        where = ", ".join(f"{k} {v}" for k, v in ids.items() if v is not None)
        extra = f"; provider request id {request_id}" if request_id else ""
        return f"{self.name}: {what}" + (f" ({where}{extra})" if where or extra else "")

    def _fail(
        self,
        kind: type[BackendError],
        what: str,
        context: GenerationContext | None,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        exc: BaseException | None = None,
    ) -> NoReturn:
        error = kind(
            self._message(what, context, request_id),
            status_code=status,
            provider_request_id=request_id,
            retryable=retryable,
            **_ids(context),
        )
        # Chain for debugging but keep the cause's own message out of ours (it may quote a URL).
        raise error from exc


_RETIRING: set[asyncio.Task[None]] = set()


def _retire(client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
    """Close a client from a finished loop on the current one, ignoring what cannot be closed."""

    async def close() -> None:
        # Its sockets died with their loop; whatever cannot be closed has nothing left to release.
        with contextlib.suppress(Exception):
            await client.aclose()

    task = loop.create_task(close())
    _RETIRING.add(task)
    task.add_done_callback(_RETIRING.discard)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _default_client(
    timeout: float | httpx.Timeout,
    transport: httpx.AsyncBaseTransport | None,
    connections: int,
    proxy: str | None,
) -> httpx.AsyncClient:
    """The client a backend creates for itself.

    The aiohttp transport with ``connections`` slots (grown to the sweep's concurrency by
    :meth:`HTTPBackend.reserve_connections`), or a plain httpx client around the transport
    the caller passed.
    """
    if transport is None:
        return make_async_client(concurrency=connections, timeout=timeout, proxy=proxy)
    return httpx.AsyncClient(timeout=timeout, transport=transport)


def _ids(context: GenerationContext | None) -> dict[str, str | None]:
    if context is None:
        return {"condition_id": None, "request_id": None}
    return {
        "condition_id": context.condition.id if context.condition is not None else None,
        "request_id": context.request.id if context.request is not None else None,
    }


__all__ = [
    "DEFAULT_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "RETRYABLE_STATUS",
    "HTTPBackend",
    "encode_json",
    "env_key",
    "parse_retry_after",
    "scrub",
]
