"""The HTTP transport under every backend: httpx's interface, aiohttp's connection pool.

Why this exists: httpx 0.28's own transport (httpcore) scans its whole connection pool for every
request, which is quadratic in the connections open; at 128 requests in flight it reaches a few
per cent of the ideal rate and at 512 it stalls (encode/httpx#3215, numbers in
``benchmarks/README.md``). Real providers answer in 5–30 s, so holding a 4,000-RPM limit needs
more than 1,000 requests in flight.

The backends keep speaking httpx (``httpx.AsyncClient``, ``httpx.MockTransport`` in tests); only
the transport, httpx's documented seam, is swapped. :class:`AiohttpTransport` sends each
:class:`httpx.Request` through one shared :class:`aiohttp.ClientSession` whose ``TCPConnector``
keeps its idle connections in per-host queues (constant time per request), reads the body fully
and returns an :class:`httpx.Response`. aiohttp errors become the httpx exceptions the backends
already map (timeouts → :class:`httpx.TimeoutException`, refused connections →
:class:`httpx.ConnectError`, broken replies → :class:`httpx.RemoteProtocolError`).

Use :func:`make_async_client`, the one factory the backends and the sweep call::

    client = make_async_client(concurrency=512, timeout=120.0)
    response = await client.post(url, json=body)
    await client.aclose()

It returns a lean :class:`httpx.AsyncClient` subclass: httpx's per-request client machinery
(header re-encoding, cookie jar, auth and redirect loops) cost more CPU than the exchange itself,
so requests that configure none of it skip it (see :class:`_LeanAsyncClient`); the backends' hot
POST (``post_bytes``) builds no httpx objects at all. Every request, lean or not, goes through
the one aiohttp session. Sessions are made lazily in the running loop and closed when that loop
shuts down, so one client can serve successive ``asyncio.run`` calls (a notebook running several
sweeps).

**Proxies.** ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` (either case) and ``NO_PROXY``
are honoured by default, per request (:func:`proxy_for`: the scheme's variable, else
``ALL_PROXY``; ``NO_PROXY`` hosts go direct: list ``localhost,127.0.0.1`` there for a local
model server), or one explicit ``proxy=`` for every request. aiohttp tunnels HTTPS through the
proxy with ``CONNECT`` and forwards plain HTTP.

**Never a second POST.** aiohttp resends a request on a reused connection that died only for
idempotent methods; a POST that fails so is an error the engine retries, once per attempt, so
the attempt count, the rate limiter and the cost cap see every request sent. Cancelling one
request cancels only its own task (aiohttp shields shared DNS lookups from a waiter's
cancellation).

**Limits.** Connection slots (:attr:`AiohttpTransport.limit`, an ``asyncio.Semaphore`` so
httpx's ``pool`` timeout is honoured) follow the sweep's concurrency
(:meth:`AiohttpTransport.reserve`); a reply body above ``max_body_bytes`` (64 MiB by default,
after decompression) is a :class:`ReplyTooLarge` error, not a memory blow-up.

Not supported: HTTP/2, streaming responses (bodies are read fully), a write timeout (aiohttp has
none; ``connect``, ``read`` and ``pool`` are honoured).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib.util
import ipaddress
import json as json_module
import logging
import os
import ssl as ssl_module
import time
import zlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger(__name__)
# httpx logs one INFO line per request; the lean path keeps it.
_httpx_logger = logging.getLogger("httpx")

#: The transports :func:`make_async_client` can build.
TransportName = Literal["aiohttp", "httpx"]
TRANSPORTS: tuple[TransportName, ...] = ("aiohttp", "httpx")

# Hop-by-hop and framing headers: aiohttp computes its own from the body it sends.
_SKIP_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})

# httpx sends ``Content-Length: 0`` for these methods even without a body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Distinct URLs remembered by the URL caches (a backend uses one or two).
_URL_CACHE_SIZE = 256

_TimeoutKey = tuple[float | None, float | None, float | None]


def aiohttp_available() -> bool:
    """Whether aiohttp can be imported (without importing it)."""
    return importlib.util.find_spec("aiohttp") is not None


#: The default cap on a reply body, after decompression: far above any completion or batch
#: result page, far below what would exhaust memory.
MAX_BODY_BYTES = 64 * 1024 * 1024


class ReplyTooLarge(httpx.DecodingError):
    """A reply body longer than the transport's ``max_body_bytes`` (compressed or not)."""


class RawResponse:
    """A fully read reply of the fast path: what a backend reads of an :class:`httpx.Response`.

    ``status_code``, case-insensitive ``headers``, ``content`` (bytes as received), ``text``,
    ``reason_phrase`` and ``json()`` behave as httpx's do for an uncompressed body; the lean
    client hands a compressed reply to httpx for decoding instead (see
    :meth:`_LeanAsyncClient.post_bytes`).
    """

    __slots__ = ("content", "headers", "raw_headers", "reason_phrase", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: Mapping[str, str],
        raw_headers: Any,
        content: bytes,
        reason_phrase: str,
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.raw_headers = raw_headers
        self.content = content
        self.reason_phrase = reason_phrase

    def __repr__(self) -> str:
        return f"<RawResponse [{self.status_code} {self.reason_phrase}]>"

    @property
    def encoding(self) -> str:
        """The charset of ``Content-Type``, else UTF-8 (httpx's default for JSON APIs)."""
        content_type = self.headers.get("content-type", "")
        for part in content_type.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip("\"' ")
                try:
                    codecs.lookup(charset)
                except LookupError:
                    break
                return charset
        return "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding` (undecodable bytes replaced)."""
        return self.content.decode(self.encoding, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (UTF-8/16/32 detected, as httpx does)."""
        return json_module.loads(self.content)


#: The environment variables that choose a proxy (read per request, so a change applies).
_PROXY_VARS = (
    "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
    "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY",
)  # fmt: skip


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy the environment names for ``url``, or None to connect directly.

    ``HTTPS_PROXY`` for ``https://`` URLs, ``HTTP_PROXY`` for ``http://``, else ``ALL_PROXY``
    (lower-case names win, as curl reads them). ``NO_PROXY`` exempts hosts: ``*``, host names
    with their subdomains, ``.suffix``, ``host:port``, IP addresses and CIDR blocks. As with
    curl and httpx, loopback is not exempt by itself: list it (``NO_PROXY=localhost,
    127.0.0.1``) so a local model server is reached directly.

    Example:
        >>> env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost,127.0.0.1"}
        >>> proxy_for("https://api.openai.com/v1", env)
        'http://proxy:3128'
        >>> proxy_for("https://127.0.0.1:8000/v1", env) is None
        True
    """
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    chosen = None
    for name in (f"{scheme}_proxy", "all_proxy"):
        chosen = env.get(name) or env.get(name.upper())
        if chosen:
            break
    if not chosen:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if no_proxy and _bypassed(host, parts.port, no_proxy):
        return None
    return chosen if "://" in chosen else f"http://{chosen}"


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` exempts ``host`` (curl's rules, plus CIDR blocks)."""
    for raw in no_proxy.replace(" ", "").split(","):
        entry = raw.lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and port is not None and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if "/" in name:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(name, False):
                    return True
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


def _inflate(body: bytes, encoding: str, cap: int) -> bytes | None:
    """``body`` decompressed (gzip or deflate) with at most ``cap`` bytes out, else None.

    None for an encoding this does not decode (httpx decodes those); :class:`ReplyTooLarge`
    when the decoded body would pass ``cap`` (a compression bomb stops at the cap).
    """
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    try:
        out = decoder.decompress(body, cap + 1)
    except zlib.error:
        if encoding != "deflate":
            raise
        decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as some servers send
        out = decoder.decompress(body, cap + 1)
    if len(out) > cap or decoder.unconsumed_tail:
        raise ReplyTooLarge(f"reply body larger than {cap} bytes once decompressed")
    return out


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An :class:`httpx.AsyncBaseTransport` that sends requests with aiohttp.

    The aiohttp session is created lazily, on first use, inside the running event loop, so the
    transport (and the client around it) can be built anywhere, e.g. in a backend's
    ``__init__``. If it is later used from another event loop (a notebook's loop, then a sweep in
    a thread of its own), that loop gets its own session; a session whose loop has closed is
    discarded.

    Args:
        limit: Most requests on the wire at once (size it to the concurrency; :meth:`reserve`
            raises it); requests beyond it wait for a free slot, bounded by httpx's ``pool``
            timeout.
        keepalive_timeout: Seconds an idle connection is kept for reuse.
        ssl: ``True`` (verify), ``False`` (do not verify) or an :class:`ssl.SSLContext`.
        connector_kwargs: Extra :class:`aiohttp.TCPConnector` arguments.
        proxy: One proxy URL for every request; None (the default) reads the environment per
            request (:func:`proxy_for`), unless ``trust_env`` is False.
        trust_env: Read ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``.
        max_body_bytes: Longest reply body accepted (after decompression).
    """

    def __init__(
        self,
        *,
        limit: int = 100,
        keepalive_timeout: float = 30.0,
        ssl: ssl_module.SSLContext | bool = True,
        connector_kwargs: Mapping[str, Any] | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of connections; got {limit!r}")
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "AiohttpTransport needs aiohttp: pip install 'aiohttp>=3.9' "
                "(or use make_async_client(transport='httpx'))"
            ) from exc
        self._aiohttp = aiohttp
        self.limit = limit
        self.proxy = proxy
        self.trust_env = trust_env
        self.max_body_bytes = max_body_bytes
        self._proxies: dict[tuple[str, tuple[str | None, ...]], str | None] = {}
        self._connector_kwargs: dict[str, Any] = {
            # The slots below bound what is on the wire; the connector itself does not wait.
            "limit": 0,
            "limit_per_host": 0,
            "keepalive_timeout": keepalive_timeout,
            "ssl": ssl,
            **(connector_kwargs or {}),
        }
        # The session of the loop used last (the fast path), and sessions of other loops.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: _LoopSession | None = None
        self._others: dict[asyncio.AbstractEventLoop, _LoopSession] = {}
        self._timeouts: dict[_TimeoutKey, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, Any] = {}
        import yarl  # aiohttp's own URL type (a dependency of aiohttp)

        self._yarl = yarl
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._current else "idle")
        return f"<AiohttpTransport limit={self.limit} {state}>"

    # -- sessions ---------------------------------------------------------------------------

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        """The running loop's session, if one is open (for tests and repr)."""
        return self._current.session if self._current is not None else None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _LoopSession:
        """The session for ``loop``: reused if it has one, else created (first use, new loop)."""
        if self._closed:
            raise RuntimeError("the AiohttpTransport is closed; build a new client")
        if self._loop is not None and self._current is not None:
            self._others[self._loop] = self._current
        for other in [lp for lp in self._others if lp.is_closed() or lp is loop]:
            entry = self._others.pop(other)
            if other is loop and not entry.session.closed:
                self._loop, self._current = loop, entry
                return entry
            _abandon(entry)
        session = self._new_session()
        guard = _close_at_loop_end(session)
        await anext(guard)  # registers with the loop's async-generator hooks
        entry = _LoopSession(session, asyncio.Semaphore(self.limit), guard, self.limit)
        self._loop, self._current = loop, entry
        return entry

    def reserve(self, limit: int) -> None:
        """Allow at least ``limit`` requests on the wire (a sweep's concurrency).

        Grows the open sessions' slots in place (never shrinks: requests may hold them).
        """
        if limit <= self.limit:
            return
        self.limit = limit
        entries = [*self._others.values(), *([self._current] if self._current else [])]
        for entry in entries:
            for _ in range(limit - entry.size):
                entry.slots.release()  # an asyncio.Semaphore may grow past its start value
            entry.size = limit

    def _proxy(self, url: str) -> str | None:
        """The proxy for ``url``: the explicit one, else the environment's (cached per host)."""
        if self.proxy is not None or not self.trust_env:
            return self.proxy
        parts = urlsplit(url)
        env = tuple(os.environ.get(name) for name in _PROXY_VARS)
        key = (f"{parts.scheme}://{parts.netloc}", env)
        if key not in self._proxies:
            if len(self._proxies) >= _URL_CACHE_SIZE:
                self._proxies.clear()
            self._proxies[key] = proxy_for(url)
        return self._proxies[key]

    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp

        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(**self._connector_kwargs),
            # httpx decodes gzip/brotli itself from the raw body and keeps its own cookies.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    def _timeout(self, spec: Mapping[str, float | None] | None) -> aiohttp.ClientTimeout | None:
        """Aiohttp's timeout for httpx's ``timeout`` extension (cached: few distinct values)."""
        if not spec:
            return None
        connect, read, pool = spec.get("connect"), spec.get("read"), spec.get("pool")
        key = (connect, read, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # The pool wait is bounded in handle_async_request (slots), so aiohttp's own
            # ``connect`` (pool wait + opening) only has the opening left to bound.
            timeout = self._aiohttp.ClientTimeout(
                total=None, connect=connect, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    def _url(self, text: str) -> Any:
        """The :class:`yarl.URL` for an (already encoded) URL string, parsed once per URL."""
        parsed = self._urls.get(text)
        if parsed is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            # httpx URLs are already percent-encoded; yarl must not encode them again.
            parsed = self._urls[text] = self._yarl.URL(text, encoded=True)
        return parsed

    # -- the transport API ------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request through aiohttp and return the fully read httpx response."""
        timeouts = request.extensions.get("timeout")
        entry = await self._acquire(timeouts, request)
        try:
            return await self._send(entry.session, request, timeouts)
        finally:
            entry.slots.release()

    async def _acquire(
        self, timeouts: Mapping[str, float | None] | None, request: httpx.Request | None
    ) -> _LoopSession:
        """The running loop's session, with one of its connection slots taken (release it)."""
        loop = asyncio.get_running_loop()
        entry = self._current
        if loop is not self._loop or entry is None or entry.session.closed:
            entry = await self._open(loop)
        slots = entry.slots
        if slots.locked():
            await _wait_for_slot(slots, timeouts, request)
        else:
            await slots.acquire()
        return entry

    async def _send(
        self,
        session: aiohttp.ClientSession,
        request: httpx.Request,
        timeouts: Mapping[str, float | None] | None,
    ) -> httpx.Response:
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in _SKIP_HEADERS
        ]
        reply = await self._exchange(
            session, request.method, self._url(str(request.url)), body, headers, timeouts, request
        )
        return _httpx_response(self.decoded(reply))

    def decoded(self, reply: RawResponse) -> RawResponse:
        """``reply`` with a gzip/deflate body decompressed under the body cap.

        httpx would decompress it without a limit (a 255 KiB gzip reply can hold 256 MiB);
        the decoded reply drops ``Content-Encoding`` and ``Content-Length`` so it is not
        decoded twice. Other encodings (br, zstd) are left to httpx.
        """
        encoding = reply.headers.get("content-encoding", "identity").lower().strip()
        if encoding == "identity":
            return reply
        inflated = _inflate(reply.content, encoding, self.max_body_bytes)
        if inflated is None:
            return reply
        drop = (b"content-encoding", b"content-length")
        raw = tuple((k, v) for k, v in reply.raw_headers if k.lower() not in drop)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        return RawResponse(reply.status_code, headers, raw, inflated, reply.reason_phrase)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: Any,
        body: bytes,
        headers: list[tuple[str, str]],
        timeouts: Mapping[str, float | None] | None,
        request: httpx.Request | None,
    ) -> RawResponse:
        """One request through aiohttp, read whole; aiohttp errors as httpx's exceptions."""
        aiohttp = self._aiohttp
        try:
            resp = await session.request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=self._timeout(timeouts),
                allow_redirects=False,
                proxy=self._proxy(str(url)),
            )
            try:
                content = await self._read(resp, request)
            finally:
                resp.release()
        except aiohttp.ClientError as exc:
            raise _map_error(exc, request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"timed out: {exc!r}", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or repr(exc), request=request) from exc
        return RawResponse(resp.status, resp.headers, resp.raw_headers, content, resp.reason or "")

    async def _read(self, resp: Any, request: httpx.Request | None) -> bytes:
        """The whole body, refusing one longer than ``max_body_bytes`` before reading it all."""
        cap = self.max_body_bytes
        length = resp.content_length
        if length is not None and length <= cap:
            content: bytes = await resp.read()
            return content
        if length is not None:
            raise ReplyTooLarge(f"reply body of {length} bytes is over {cap}", request=request)
        chunks, size = [], 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > cap:
                raise ReplyTooLarge(f"reply body larger than {cap} bytes", request=request)
            chunks.append(chunk)
        return b"".join(chunks)

    async def post_bytes(
        self,
        url: str,
        body: bytes,
        headers: list[tuple[str, str]],
        timeouts: Mapping[str, float | None] | None,
    ) -> RawResponse:
        """POST ``body`` to the absolute ``url`` without building httpx objects (the fast path).

        Same connection slots, timeouts, proxies and error mapping as
        :meth:`handle_async_request`; ``headers`` are sent as given (aiohttp adds ``Host`` and
        ``Content-Length``). The reply body is returned as received (not decompressed).
        """
        entry = await self._acquire(timeouts, None)
        try:
            return await self._exchange(
                entry.session, "POST", self._url(url), body, headers, timeouts, None
            )
        finally:
            entry.slots.release()

    async def aclose(self) -> None:
        """Close every session: here, on its own (live) loop, or forget it (dead loop)."""
        self._closed = True
        entries = dict(self._others)
        if self._loop is not None and self._current is not None:
            entries[self._loop] = self._current
        self._others.clear()
        self._loop, self._current = None, None
        current = asyncio.get_running_loop()
        for loop, entry in entries.items():
            if loop is current:
                await entry.session.close()
                await entry.guard.aclose()
            elif loop.is_closed():
                _abandon(entry)
            else:
                # Another loop is alive (a notebook's, say): close the session over there.
                asyncio.run_coroutine_threadsafe(_close_entry(entry), loop)


def _httpx_response(reply: RawResponse) -> httpx.Response:
    """The :class:`httpx.Response` of a fully read reply (httpx decodes compressed bodies)."""
    return httpx.Response(
        reply.status_code,
        headers=reply.raw_headers,
        stream=httpx.ByteStream(reply.content),
        extensions={
            "http_version": b"HTTP/1.1",
            "reason_phrase": reply.reason_phrase.encode("latin-1", "replace"),
        },
    )


@dataclass
class _LoopSession:
    """One event loop's aiohttp session, its connection slots, and its loop-end guard."""

    session: aiohttp.ClientSession
    slots: asyncio.Semaphore
    guard: AsyncGenerator[None, None]
    #: The slots the semaphore was given (grown by :meth:`AiohttpTransport.reserve`).
    size: int


async def _close_at_loop_end(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Close ``session`` when its event loop shuts down.

    An async generator started in a loop is finalised by ``loop.shutdown_asyncgens()``, which
    ``asyncio.run`` calls while the loop still runs. So a client nobody closed (a model used
    in one ``asyncio.run``, then in the next) still closes its connections in the right loop,
    instead of leaking sockets into a dead one.
    """
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


async def _close_entry(entry: _LoopSession) -> None:
    await entry.session.close()
    await entry.guard.aclose()


async def _wait_for_slot(
    slots: asyncio.Semaphore,
    timeouts: Mapping[str, float | None] | None,
    request: httpx.Request | None,
) -> None:
    """Wait for a free connection, bounded by httpx's ``pool`` timeout."""
    pool = timeouts.get("pool") if timeouts else None
    try:
        async with asyncio.timeout(pool):
            await slots.acquire()
    except TimeoutError as exc:
        raise httpx.PoolTimeout(
            f"no free connection within {pool} s (all connections busy)", request=request
        ) from exc


def _abandon(entry: _LoopSession) -> None:
    """Forget a session whose loop closed without shutting down its async generators.

    (``asyncio.run`` does shut them down, and the guard has then closed the session already.)
    Nothing can be awaited on a dead loop; detaching the connector and finishing the guard
    synchronously keeps aiohttp and asyncio from warning later about objects nobody can close.
    """
    connector = entry.session.connector
    if connector is not None and not connector.closed:
        with contextlib.suppress(Exception):
            connector._closed = True  # its sockets died with the loop's selector
    entry.session.detach()
    closing = entry.guard.aclose()
    try:
        closing.send(None)  # the session is closed now, so the finally clause never awaits
    except StopIteration:
        pass
    except Exception:  # pragma: no cover - best effort on a dead loop
        logger.debug("could not finish a session guard of a closed loop", exc_info=True)
    finally:
        closing.close()


def _map_error(exc: Exception, request: httpx.Request | None) -> httpx.TransportError:
    """The httpx exception a backend expects for an aiohttp failure."""
    import aiohttp

    message = str(exc) or repr(exc)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised while parsing a reply that is not valid HTTP.
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(message, request=request)
    return httpx.NetworkError(message, request=request)


class _LeanAsyncClient(httpx.AsyncClient):
    """An :class:`httpx.AsyncClient` that skips per-request machinery nobody configured.

    httpx's ``send`` runs every request through the auth flow, the redirect loop, a cookie
    jar (``http.cookiejar`` with a ``urllib`` request per response) and a stream wrapper; and
    ``build_request`` re-parses the URL string each time. Profiled at 512 in flight that is
    more client CPU than the HTTP exchange itself. When the client has no auth, no event
    hooks, no mounts or proxies, and redirects are not followed, :meth:`send` goes straight to
    the transport, and URLs are parsed once. Any of those configured, or ``stream=True``, and
    the request takes httpx's ordinary path. Responses' ``Set-Cookie`` headers are not
    stored on the lean path (API clients carry no session state); everything else callers
    see (``Response.request``, ``.elapsed``, ``.json()``, the ``httpx`` log line, exceptions)
    is unchanged.
    """

    def __init__(self, *, engine: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=engine, **kwargs)
        self._engine = engine
        self._urls: dict[str, httpx.URL] = {}
        self._header_cache: dict[Any, list[tuple[str, str]]] = {}
        self._timeout_of: httpx.Timeout | None = None
        self._timeout_dict: dict[str, float | None] = {}

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
        extensions: Any = None,
    ) -> httpx.Request:
        """Build as httpx does; the common API call (absolute URL, JSON or bytes) directly.

        httpx's own path re-derives header encodings and walks the header list a dozen times
        per request (``Request._prepare``); for a JSON POST that is most of its cost. The
        direct path builds the same request: Host, the client's headers overridden by
        ``headers``, Content-Length, Content-Type, the same JSON encoding and timeouts.
        """
        if isinstance(url, str):
            parsed = self._urls.get(url)
            if parsed is None:
                if len(self._urls) >= _URL_CACHE_SIZE:
                    self._urls.clear()
                parsed = self._urls[url] = httpx.URL(url)
            url = parsed
        simple = (
            data is None
            and files is None
            and params is None
            and cookies is None
            and extensions is None
            and (json is None or content is None)
            and (content is None or isinstance(content, bytes))
            and (headers is None or isinstance(headers, Mapping))
            and url.is_absolute_url
            and not self.params
            and not self.cookies
        )
        if not simple:
            return super().build_request(
                method,
                url,
                content=content,
                data=data,
                files=files,
                json=json,
                params=params,
                headers=headers,
                cookies=cookies,
                timeout=timeout,
                extensions=extensions,
            )
        return self._direct_request(method, url, content, json, headers, timeout)

    def _direct_request(
        self,
        method: str,
        url: httpx.URL,
        content: bytes | None,
        json: Any,
        headers: Mapping[str, str] | None,
        timeout: Any,
    ) -> httpx.Request:
        content_type: bytes | None = None
        if json is not None:
            body = json_module.dumps(
                json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
            content_type = b"application/json"
        else:
            body = content or b""
        extra = httpx.Headers(headers) if headers else None
        overridden = {key.lower() for key, _ in extra.raw} if extra is not None else set()
        raw: list[tuple[bytes, bytes]] = []
        if b"host" not in overridden:
            raw.append((b"Host", url.netloc))
        raw += [(k, v) for k, v in self.headers.raw if k.lower() not in overridden]
        if extra is not None:
            raw += extra.raw
        method = method.upper()
        if b"content-length" not in overridden and (body or method in _BODY_METHODS):
            raw.append((b"Content-Length", str(len(body)).encode()))
        if content_type is not None and b"content-type" not in overridden:
            raw.append((b"Content-Type", content_type))
        timeouts = (
            self.timeout if timeout is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(timeout)
        ).as_dict()
        request = httpx.Request(
            method,
            url,
            headers=raw,
            stream=httpx.ByteStream(body),
            extensions={"timeout": timeouts},
        )
        request.read()  # as httpx does for in-memory bodies: ``request.content`` is available
        return request

    def _lean(self, stream: bool, auth: object, follow_redirects: object) -> bool:
        if stream or self.is_closed:
            return False
        if auth is not httpx.USE_CLIENT_DEFAULT and auth is not None:
            return False
        if auth is httpx.USE_CLIENT_DEFAULT and self.auth is not None:
            return False
        follow = (
            self.follow_redirects
            if follow_redirects is httpx.USE_CLIENT_DEFAULT
            else bool(follow_redirects)
        )
        hooks = self.event_hooks
        return not follow and not hooks["request"] and not hooks["response"]

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """Send ``request``; straight to the transport when nothing else was configured."""
        if not self._lean(stream, auth, follow_redirects):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        if "timeout" not in request.extensions:
            request.extensions["timeout"] = self.timeout.as_dict()
        start = time.perf_counter()
        response = await self._engine.handle_async_request(request)
        response.request = request
        response.default_encoding = self._default_encoding
        try:
            if isinstance(response.stream, httpx.SyncByteStream):
                # In-memory bodies (ours): httpx's sync read skips the async generator chain.
                response.read()
            else:
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        response.elapsed = timedelta(seconds=time.perf_counter() - start)
        if _httpx_logger.isEnabledFor(logging.INFO):
            _httpx_logger.info(
                'HTTP Request: %s %s "%s %d %s"',
                request.method,
                request.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
        return response

    async def post_bytes(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> RawResponse | httpx.Response:
        """POST a pre-encoded body (``headers`` name its Content-Type); the backends' hot path.

        When the transport is an :class:`AiohttpTransport` and nothing httpx-level is
        configured (the :meth:`send` conditions, no client params or cookies, an absolute
        URL), no :class:`httpx.Request` or :class:`httpx.Response` is built: the request goes
        to the transport with the headers httpx would send (the client's, overridden by
        ``headers``) and a :class:`RawResponse` comes back. That saves about a third of the
        client CPU of a request (``benchmarks/README.md``). A compressed reply, or any other
        configuration, goes through :meth:`post` and returns an :class:`httpx.Response`; both
        answer ``status_code``, ``headers``, ``text`` and ``json()`` alike.
        """
        engine = self._engine
        if (
            not isinstance(engine, AiohttpTransport)
            or not self._lean(False, httpx.USE_CLIENT_DEFAULT, httpx.USE_CLIENT_DEFAULT)
            or self.params
            or self.cookies
            or not url.startswith(("http://", "https://"))
        ):
            return await self.post(url, content=body, headers=headers)
        timeout = self.timeout
        if timeout is not self._timeout_of:
            self._timeout_of, self._timeout_dict = timeout, timeout.as_dict()
        reply = await engine.post_bytes(url, body, self._merged(headers), self._timeout_dict)
        if _httpx_logger.isEnabledFor(logging.INFO):
            _httpx_logger.info(
                'HTTP Request: POST %s "HTTP/1.1 %d %s"',
                url,
                reply.status_code,
                reply.reason_phrase,
            )
        if reply.headers.get("content-encoding", "identity").lower() != "identity":
            reply = engine.decoded(reply)  # gzip/deflate, under the body cap
            if reply.headers.get("content-encoding", "identity").lower() != "identity":
                # br, zstd: httpx decodes a body given as ``content`` with its decoder.
                return httpx.Response(
                    reply.status_code, headers=reply.raw_headers, content=reply.content
                )
        return reply

    def _merged(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The client's headers overridden by ``headers``, as httpx would merge them.

        Minus ``Host``, ``Content-Length`` and hop-by-hop headers, which aiohttp writes itself.
        Remembered per (client headers, request headers): a backend sends the same few.
        """
        base = tuple(self.headers.raw)
        key = (base, tuple(headers.items()))
        found = self._header_cache.get(key)
        if found is not None:
            return found
        extra = httpx.Headers(headers)
        overridden = {k.lower() for k, _ in extra.raw}
        raw = [(k, v) for k, v in base if k.lower() not in overridden] + extra.raw
        merged = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in raw
            if k.lower() not in _SKIP_HEADERS and k.lower() != b"host"
        ]
        if len(self._header_cache) >= _URL_CACHE_SIZE:
            self._header_cache.clear()
        self._header_cache[key] = merged
        return merged


def make_async_client(
    *,
    concurrency: int = 100,
    timeout: float | httpx.Timeout | None = 120.0,
    transport: TransportName = "aiohttp",
    lean: bool = True,
    proxy: str | None = None,
    trust_env: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
    **client_kwargs: Any,
) -> httpx.AsyncClient:
    """Build the :class:`httpx.AsyncClient` every backend and the sweep use.

    Args:
        concurrency: Requests expected in flight; sizes the connection slots.
        timeout: Seconds (or an :class:`httpx.Timeout`) for connect, read and pool waits.
        transport: ``"aiohttp"`` (default; fast at hundreds of requests in flight) or
            ``"httpx"`` (httpx's own pool: fine up to ~32 in flight). When aiohttp is not
            installed, ``"aiohttp"`` falls back to ``"httpx"`` with a log message.
        lean: Skip httpx's auth/redirect/cookie machinery per request when none of it is
            configured (see :class:`_LeanAsyncClient`); False gives a plain ``AsyncClient``
            over the same aiohttp transport.
        proxy: One proxy for every request (``"http://proxy:3128"``); None reads
            ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` (unless ``trust_env`` is False).
        trust_env: Honour the proxy environment variables.
        max_body_bytes: Longest reply body accepted, after decompression (aiohttp
            transport; httpx's own has no cap).
        **client_kwargs: Passed to :class:`httpx.AsyncClient` (``base_url``, ``headers``, ...).

    Returns:
        An open client; close it with ``await client.aclose()``.

    Raises:
        DesignError: ``transport`` is not one of :data:`TRANSPORTS`, or concurrency < 1.

    Example:
        >>> client = make_async_client(concurrency=512, timeout=60.0)
        >>> type(client.timeout).__name__, client.timeout.read
        ('Timeout', 60.0)
    """
    from afperturb.errors import DesignError, unknown_choice

    if transport not in TRANSPORTS:
        raise unknown_choice("transport", transport, TRANSPORTS)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise DesignError(f"concurrency must be a positive integer; got {concurrency!r}")
    if transport == "aiohttp" and not aiohttp_available():
        logger.warning("aiohttp is not installed; using httpx's own transport (slow above ~32)")
        transport = "httpx"
    verify = client_kwargs.pop("verify", True)
    if transport == "httpx":
        # No transport= here: httpx then mounts the environment's proxies (and NO_PROXY) itself.
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            verify=verify,
            proxy=proxy,
            trust_env=trust_env,
            **client_kwargs,
        )
    engine = AiohttpTransport(
        limit=concurrency,
        ssl=_ssl_for(verify),
        proxy=proxy,
        trust_env=trust_env,
        max_body_bytes=max_body_bytes,
    )
    if lean and "mounts" not in client_kwargs:
        return _LeanAsyncClient(engine=engine, timeout=timeout, **client_kwargs)
    return httpx.AsyncClient(transport=engine, timeout=timeout, **client_kwargs)


def _ssl_for(verify: Any) -> ssl_module.SSLContext | bool:
    """Httpx's ``verify`` (bool, SSLContext or CA bundle path) as aiohttp's ``ssl``.

    ``True`` becomes httpx's own default context (certifi's CA bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``), not the system store aiohttp would use: the same certificates are
    trusted as with httpx's own transport (a Python without system CAs, as on macOS
    installs, still reaches the providers).
    """
    if verify is True:
        return httpx.create_ssl_context()
    if isinstance(verify, ssl_module.SSLContext | bool):
        return verify
    if isinstance(verify, str):
        return ssl_module.create_default_context(cafile=verify)
    raise TypeError(f"verify must be a bool, an ssl.SSLContext or a CA bundle path; got {verify!r}")


__all__ = [
    "MAX_BODY_BYTES",
    "TRANSPORTS",
    "AiohttpTransport",
    "RawResponse",
    "ReplyTooLarge",
    "TransportName",
    "aiohttp_available",
    "make_async_client",
    "proxy_for",
]
