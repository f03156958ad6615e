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
so requests that configure none of it skip it (see :class:`_LeanAsyncClient`). POSTs (the
backends' hot request ``post_bytes``, and any ``client.post``) go one step further, through
afperturb's own HTTP/1.1 pool (:mod:`afperturb.models._http1`) instead of aiohttp's session.
Sessions are made lazily in the running loop and closed when that loop shuts down, so one
client can serve successive ``asyncio.run`` calls (a notebook running several sweeps).

Not supported: HTTP/2, streaming responses (bodies are read fully), proxies from the environment
(httpx ignores them too once a transport is given), a write timeout (aiohttp has none;
``connect``, ``read`` and ``pool`` are honoured).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json as json_module
import logging
import ssl as ssl_module
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import httpx

from afperturb.models._http1 import Http1Pool, RawResponse, header_block

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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An :class:`httpx.AsyncBaseTransport` that sends requests with aiohttp.

    The aiohttp session is created lazily, on first use, inside the running event loop, so the
    transport (and the client around it) can be built anywhere, e.g. in a backend's
    ``__init__``. If it is later used from another event loop (a notebook's loop, then a sweep in
    a thread of its own), that loop gets its own session; a session whose loop has closed is
    discarded.

    Args:
        limit: Most connections open at once (size it to the concurrency); requests beyond it
            wait for a free connection, bounded by httpx's ``pool`` timeout.
        keepalive_timeout: Seconds an idle connection is kept for reuse.
        ssl: ``True`` (verify), ``False`` (do not verify) or an :class:`ssl.SSLContext`.
        connector_kwargs: Extra :class:`aiohttp.TCPConnector` arguments.
    """

    def __init__(
        self,
        *,
        limit: int = 100,
        keepalive_timeout: float = 30.0,
        ssl: ssl_module.SSLContext | bool = True,
        connector_kwargs: Mapping[str, Any] | None = None,
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
        self._connector_kwargs: dict[str, Any] = {
            "limit": limit,
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
        # The backends' fast path (post_bytes) uses afperturb's own HTTP/1.1 pool unless the
        # connector was customised (a resolver, local address, ...: only aiohttp honours it).
        self._http1 = not connector_kwargs
        self._head_blocks: dict[int, tuple[list[tuple[str, str]], bytes]] = {}

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
        pool = None
        if self._http1:
            keepalive = self._connector_kwargs["keepalive_timeout"]
            ssl = self._connector_kwargs["ssl"]
            pool = Http1Pool(loop, ssl=ssl, keepalive_timeout=keepalive)
        guard = _close_at_loop_end(session, pool)
        await anext(guard)  # registers with the loop's async-generator hooks
        entry = _LoopSession(session, asyncio.Semaphore(self.limit), guard, pool)
        self._loop, self._current = loop, entry
        return entry

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
        """Send one request and return the fully read httpx response.

        POSTs go through the HTTP/1.1 pool (as the backends' :meth:`post_bytes` does) unless
        the connector was customised or the request names another ``Host`` than its URL;
        every other request goes through aiohttp.
        """
        timeouts = request.extensions.get("timeout")
        entry = await self._acquire(timeouts, request)
        try:
            if entry.pool is not None and request.method == "POST":
                reply = await _post_via_pool(entry.pool, request, timeouts)
                if reply is not None:
                    return _httpx_response(reply)
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
        return _httpx_response(reply)

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
            )
            try:
                content = await resp.read()
            finally:
                resp.release()
        except aiohttp.ClientError as exc:
            raise _map_error(exc, request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"timed out: {exc!r}", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or repr(exc), request=request) from exc
        return RawResponse(resp.status, resp.headers, resp.raw_headers, content, resp.reason or "")

    async def post_bytes(
        self,
        url: str,
        body: bytes,
        headers: list[tuple[str, str]],
        timeouts: Mapping[str, float | None] | None,
    ) -> RawResponse:
        """POST ``body`` to the absolute ``url`` without building httpx objects (the fast path).

        Same connection slots, timeouts and error mapping as :meth:`handle_async_request`;
        ``headers`` are sent as given (``Host`` and ``Content-Length`` are added). Unless the
        connector was customised, the exchange goes through afperturb's own HTTP/1.1 pool
        (:mod:`afperturb.models._http1`; a backend request then costs about half the CPU of
        a bare aiohttp loop's, ``benchmarks/README.md``) instead of the aiohttp session. The
        reply body is returned as received (not decompressed).
        """
        entry = await self._acquire(timeouts, None)
        try:
            pool = entry.pool
            if pool is not None:
                try:
                    head = self._head_block(headers)
                    return await pool.post(url, head, body, timeouts)
                except ValueError:
                    pass  # a URL or header the pool does not send (user:pass@host): aiohttp's
            return await self._exchange(
                entry.session, "POST", self._url(url), body, headers, timeouts, None
            )
        finally:
            entry.slots.release()

    def _head_block(self, headers: list[tuple[str, str]]) -> bytes:
        """The encoded header lines of ``headers``, remembered per list object.

        The lean client passes the same cached list for the same headers.
        """
        found = self._head_blocks.get(id(headers))
        if found is not None and found[0] is headers:
            return found[1]
        block = header_block(headers)
        if len(self._head_blocks) >= _URL_CACHE_SIZE:
            self._head_blocks.clear()
        # The list is kept with its block, so its id cannot be reused by another list.
        self._head_blocks[id(headers)] = (headers, block)
        return block

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
                if entry.pool is not None:
                    await entry.pool.aclose()
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


async def _post_via_pool(
    pool: Http1Pool, request: httpx.Request, timeouts: Mapping[str, float | None] | None
) -> RawResponse | None:
    """``request`` (a POST) through the HTTP/1.1 pool, or None when the pool cannot send it.

    The pool writes ``Host`` from the URL and ``Content-Length`` itself: a request naming
    another host, or a URL the pool refuses (``user:pass@``), is left to aiohttp.
    """
    url = request.url
    if request.headers.get("host", url.netloc.decode("ascii")) != url.netloc.decode("ascii"):
        return None
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers.raw
        if name.lower() not in _SKIP_HEADERS and name.lower() != b"host"
    ]
    body = await request.aread()
    try:
        return await pool.post(str(url), header_block(headers), body, timeouts)
    except ValueError:
        return None
    except httpx.TransportError as exc:
        exc.request = request  # as httpx's own transports do
        raise


@dataclass
class _LoopSession:
    """One event loop's aiohttp session, its connection slots, and its loop-end guard."""

    session: aiohttp.ClientSession
    slots: asyncio.Semaphore
    guard: AsyncGenerator[None, None]
    pool: Http1Pool | None = None


async def _close_at_loop_end(
    session: aiohttp.ClientSession, pool: Http1Pool | None
) -> AsyncGenerator[None, None]:
    """Close ``session`` when its event loop shuts down.

    An async generator started in a loop is finalised by ``loop.shutdown_asyncgens()``, which
    ``asyncio.run`` calls while the loop still runs. So a client nobody closed (a model used
    in one ``asyncio.run``, then in the next) still closes its connections in the right loop,
    instead of leaking sockets into a dead one.
    """
    try:
        yield
    finally:
        if pool is not None and not pool.closed:
            await pool.aclose()
        if not session.closed:
            await session.close()


async def _close_entry(entry: _LoopSession) -> None:
    if entry.pool is not None:
        await entry.pool.aclose()
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
    if entry.pool is not None:
        with contextlib.suppress(Exception):  # its sockets died with the loop's selector
            entry.pool.close()
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
            # httpx decodes a body given as ``content`` with the Content-Encoding's decoder.
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
    **client_kwargs: Any,
) -> httpx.AsyncClient:
    """Build the :class:`httpx.AsyncClient` every backend and the sweep use.

    Args:
        concurrency: Requests expected in flight; sizes the connection pool.
        timeout: Seconds (or an :class:`httpx.Timeout`) for connect, read and pool waits.
        transport: ``"aiohttp"`` (default; fast at hundreds of requests in flight) or
            ``"httpx"`` (httpx's own pool: fine up to ~32 in flight). When aiohttp is not
            installed, ``"aiohttp"`` falls back to ``"httpx"`` with a log message.
        lean: Skip httpx's auth/redirect/cookie machinery per request when none of it is
            configured (see :class:`_LeanAsyncClient`); False gives a plain ``AsyncClient``.
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
    engine: httpx.AsyncBaseTransport
    if transport == "aiohttp":
        engine = AiohttpTransport(limit=concurrency, ssl=_ssl_for(verify))
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        engine = httpx.AsyncHTTPTransport(limits=limits, verify=verify)
    if lean and not {"mounts", "proxy"} & set(client_kwargs):
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
    "TRANSPORTS",
    "AiohttpTransport",
    "RawResponse",
    "TransportName",
    "aiohttp_available",
    "make_async_client",
]
