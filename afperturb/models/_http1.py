"""A lean HTTP/1.1 client pool for the backends' one hot request: POST a body, read the reply.

Why: at 512–1,024 requests in flight a sweep is CPU-bound on the client, and aiohttp's
``ClientSession`` machinery (a ``ClientRequest`` and ``ClientResponse`` per request, payload
registry, timers, a task to write each body, stream readers) was about 0.12 ms of the ~0.44 ms
of client CPU a trial cost, more than any other single part (py-spy, ``benchmarks/README.md``,
"Fourth pass"). The exchange a backend needs is small: write one request, parse one reply.
This pool does just that on :class:`asyncio.Protocol` connections, as the benchmark's loopback
server does on the other side.

What it does:

- keep-alive connections per origin (scheme, host, port), reused newest first; idle ones
  older than ``keepalive_timeout`` are closed when next seen;
- one request per connection at a time (no pipelining); the caller bounds how many are
  in flight (:class:`~afperturb.models._transport.AiohttpTransport`'s slots);
- replies framed by ``Content-Length``, ``Transfer-Encoding: chunked``, or the connection's
  end; ``1xx`` interim replies skipped; ``Connection: close`` honoured;
- TLS through :mod:`asyncio` (``ssl``; ``True`` trusts what httpx trusts: certifi's bundle),
  host names resolved once per ``_DNS_TTL_S`` per origin;
- a connect timeout per connection; the read timeout (the longest silence while waiting for
  the reply, httpx's meaning) checked by one periodic timer per pool rather than a timer per
  request;
- a reused keep-alive connection that ends before a single byte of the reply (the server
  closed it while idle, the race every keep-alive client meets) is replaced and the request
  sent once more, on a fresh connection. aiohttp and httpcore do not resend a POST there; the
  sweep engine would retry the failure anyway (it cannot tell either whether the provider saw
  the request), so this only saves it an attempt and a backoff. A fresh connection that ends
  so is a :class:`httpx.RemoteProtocolError`.

What it leaves to others: bodies are returned as received (the caller decodes compressed
ones), no proxies, redirects, cookies, HTTP/2 or streaming; the transport uses aiohttp for
anything but its fast path. Failures are raised as the httpx exceptions the backends map.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json as json_module
import socket
import ssl as ssl_module
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

#: Longest reply head (status line and headers) accepted.
_MAX_HEAD = 64 * 1024
#: Seconds a resolved host's addresses are reused.
_DNS_TTL_S = 10.0

_FRAMING_HEAD, _FRAMING_LENGTH, _FRAMING_CHUNKED, _FRAMING_CLOSE, _FRAMING_DONE = range(5)


class ReplyHeaders(dict[str, str]):
    """Reply headers by lower-cased name (repeated headers joined with ", ", as httpx does).

    Lookups are case-insensitive; iteration yields the lower-cased names.
    """

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


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


class _Stale(Exception):
    """The connection ended before a single byte of the reply: it may be resent elsewhere."""


class _Origin:
    """Where requests go and how to reach it: host, port, TLS, the encoded Host header."""

    __slots__ = ("host", "host_header", "idle", "key", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int, netloc: str) -> None:
        self.key = (scheme, host, port)
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.host_header = netloc.encode("idna" if not netloc.isascii() else "ascii")
        #: Idle keep-alive connections, the most recently used last.
        self.idle: list[_Connection] = []


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses the reply to the request in flight."""

    def __init__(self, pool: Http1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future[RawResponse] | None = None
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        self.last_io = 0.0
        self.read_timeout: float | None = None
        self._buf = bytearray()
        self._state = _FRAMING_HEAD
        self._need = 0  # body length (Content-Length framing)
        self._head: tuple[int, str, ReplyHeaders, list[tuple[bytes, bytes]], bool] | None = None
        self._chunks: list[bytes] = []
        self._got_bytes = False
        #: Set by :meth:`Http1Pool.aclose` to hear when the socket is closed.
        self.lost: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.reply is None or self.reply.done():
            self._close()  # bytes nobody asked for: the connection is out of step
            return
        self._got_bytes = True
        self.last_io = time.monotonic()
        self._buf += data
        try:
            self._parse()
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the reply

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        reply = self.reply
        if reply is None or reply.done():
            return
        if self._state == _FRAMING_CLOSE and self._head is not None:
            self._finish(bytes(self._buf))  # the reply's end is the connection's end
        elif not self._got_bytes:
            reply.set_exception(_Stale())
        else:
            reason = f": {exc}" if exc else ""
            reply.set_exception(httpx.RemoteProtocolError(f"server disconnected mid-reply{reason}"))

    # -- one exchange -------------------------------------------------------------------------

    def send(self, data: bytes, read_timeout: float | None) -> asyncio.Future[RawResponse]:
        """Write one request; the future resolves with its reply."""
        transport = self.transport
        assert transport is not None
        self.reply = reply = self.pool.loop.create_future()
        self.requests += 1
        self.read_timeout = read_timeout
        self.last_io = time.monotonic()
        self._got_bytes = False
        transport.write(data)
        return reply

    def timed_out(self, now: float) -> bool:
        """Whether the reply has been silent longer than the read timeout."""
        timeout = self.read_timeout
        return timeout is not None and now - self.last_io > timeout

    def _fail(self, exc: BaseException) -> None:
        reply = self.reply
        if reply is not None and not reply.done():
            reply.set_exception(exc)
        self._close()

    def _close(self) -> None:
        self.closed = True
        transport, self.transport = self.transport, None
        if transport is not None:
            # Its event loop may be closed (a loop closed by hand): then nothing can be done.
            with contextlib.suppress(RuntimeError):
                transport.abort()

    def _finish(self, body: bytes) -> None:
        assert self._head is not None and self.reply is not None
        status, reason, headers, raw, keep_alive = self._head
        self._head = None
        self._state = _FRAMING_HEAD
        self._chunks = []
        self.read_timeout = None
        if not keep_alive:
            self._close()
        self.reply.set_result(RawResponse(status, headers, raw, body, reason))

    # -- parsing ------------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        if self._state == _FRAMING_HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("reply head longer than 64 KiB")
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            self._start_body(head)
            if self._state == _FRAMING_HEAD:  # a 1xx interim reply: the real one follows
                self._parse()
                return
        if self._state == _FRAMING_LENGTH:
            if len(buf) >= self._need:
                if len(buf) > self._need:
                    raise httpx.RemoteProtocolError("reply longer than its Content-Length")
                body = bytes(buf)
                buf.clear()
                self._finish(body)
        elif self._state == _FRAMING_CHUNKED:
            self._parse_chunks()

    def _start_body(self, head: bytes) -> None:
        status, reason, headers, raw, version = _parse_head(head)
        if 100 <= status < 200:
            if status == 101:
                raise httpx.RemoteProtocolError("the server switched protocols")
            return  # interim reply (100 Continue, 103 Early Hints): stay in _FRAMING_HEAD
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == b"1.1" else "keep-alive" in connection
        encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if encoding is not None:
            if encoding.lower().rpartition(",")[2].strip() != "chunked":
                raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {encoding!r}")
            self._state = _FRAMING_CHUNKED
        elif status in (204, 304):
            self._state = _FRAMING_LENGTH
            self._need = 0
        elif length is not None:
            try:
                need = int(length)
            except ValueError:
                need = -1  # several distinct values joined, or garbage
            if need < 0 or not length.strip().isdigit():
                raise httpx.RemoteProtocolError(f"bad Content-Length {length!r}")
            self._state = _FRAMING_LENGTH
            self._need = need
        else:
            self._state = _FRAMING_CLOSE
            keep_alive = False
        self._head = (status, reason, headers, raw, keep_alive)

    def _parse_chunks(self) -> None:
        """Take the complete chunks off the front of the buffer (the rest waits for more)."""
        buf, pos = self._buf, 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("chunk size line too long")
                break
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text!r}") from None
            if size == 0:
                # Trailer fields (ignored) end with an empty line.
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    end = eol + 4
                else:
                    found = buf.find(b"\r\n\r\n", eol)
                    if found < 0:
                        break
                    end = found + 4
                if end != len(buf):
                    raise httpx.RemoteProtocolError("bytes after the last chunk")
                buf.clear()
                self._finish(b"".join(self._chunks))
                return
            start, stop = eol + 2, eol + 2 + size
            if len(buf) < stop + 2:
                break
            if buf[stop : stop + 2] != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")
            self._chunks.append(bytes(buf[start:stop]))
            pos = stop + 2
        if pos:
            del buf[:pos]


def _parse_head(head: bytes) -> tuple[int, str, ReplyHeaders, list[tuple[bytes, bytes]], bytes]:
    """Status, reason, headers, raw header pairs and HTTP version of a reply head."""
    status_line, *lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x reply: {status_line[:80]!r}")
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    headers = ReplyHeaders()
    raw: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        value = value.strip(b" \t")
        raw.append((name, value))
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        seen = dict.get(headers, key)
        dict.__setitem__(headers, key, text if seen is None else f"{seen}, {text}")
    return status, reason, headers, raw, parts[0][5:]


class Http1Pool:
    """Keep-alive HTTP/1.1 connections of one event loop; see the module docstring.

    Args:
        loop: The event loop the connections live in.
        ssl: ``True`` (verify), ``False`` (do not verify) or an :class:`ssl.SSLContext`.
        keepalive_timeout: Seconds an idle connection is kept for reuse.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        ssl: ssl_module.SSLContext | bool = True,
        keepalive_timeout: float = 30.0,
    ) -> None:
        self.loop = loop
        self.keepalive_timeout = keepalive_timeout
        self._ssl_option = ssl
        self._ssl_context: ssl_module.SSLContext | None = None
        self._origins: dict[str, tuple[_Origin, bytes]] = {}
        self._by_key: dict[tuple[str, str, int], _Origin] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Future[list[Any]]] = {}
        self._busy: set[_Connection] = set()
        self._all: set[_Connection] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._period = 1.0
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._all)} connections"
        return f"<Http1Pool {state}>"

    # -- the request ----------------------------------------------------------------------------

    async def post(
        self,
        url: str,
        head: bytes,
        body: bytes,
        timeouts: Mapping[str, float | None] | None,
    ) -> RawResponse:
        """POST ``body`` to ``url``; ``head`` holds the header lines (each ending CRLF) to send.

        The request line, ``Host`` and ``Content-Length`` are added here.
        """
        if self.closed:
            raise RuntimeError("the HTTP/1.1 pool is closed")
        origin, start = self._target(url)
        data = b"".join(
            (start, head, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        )
        read = timeouts.get("read") if timeouts else None
        for attempt in range(2):
            # The resend after a stale connection always opens a fresh one: when the server
            # restarted, every idle connection is dead.
            conn = self._idle(origin) if attempt == 0 else None
            if conn is None:
                conn = await self._connect(origin, timeouts)
            reused = conn.requests > 0
            busy = self._busy
            busy.add(conn)
            if read is not None:
                self._watch(read)
            try:
                reply = await conn.send(data, read)
            except _Stale:
                self._all.discard(conn)
                if reused:
                    continue  # closed by the server while idle: send it on a fresh one
                raise httpx.RemoteProtocolError(
                    "server disconnected without sending a reply"
                ) from None
            except BaseException:
                conn._close()  # cancelled or failed mid-exchange: its state is unknown
                self._all.discard(conn)
                raise
            finally:
                busy.discard(conn)
            if conn.closed:
                self._all.discard(conn)
            else:
                conn.idle_since = time.monotonic()
                origin.idle.append(conn)
            return reply
        raise httpx.RemoteProtocolError("server disconnected without sending a reply")

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        """The origin and encoded ``POST <target> HTTP/1.1`` + ``Host`` lines of ``url``."""
        found = self._origins.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValueError(f"the HTTP/1.1 pool sends to plain http(s) URLs only; got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        origin = self._by_key.get(key)
        if origin is None:
            origin = self._by_key[key] = _Origin(parts.scheme, parts.hostname, port, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        start = b"POST " + target.encode("ascii") + b" HTTP/1.1\r\nHost: "
        found = (origin, start + origin.host_header + b"\r\n")
        if len(self._origins) >= 256:
            self._origins.clear()
        self._origins[url] = found
        return found

    def _idle(self, origin: _Origin) -> _Connection | None:
        """The most recently used live idle connection, closing stale ones on the way."""
        idle = origin.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                self._all.discard(conn)
                continue
            if time.monotonic() - conn.idle_since > self.keepalive_timeout:
                conn._close()
                self._all.discard(conn)
                continue
            return conn
        return None

    # -- connecting -----------------------------------------------------------------------------

    async def _connect(
        self, origin: _Origin, timeouts: Mapping[str, float | None] | None
    ) -> _Connection:
        timeout = timeouts.get("connect") if timeouts else None
        try:
            async with asyncio.timeout(timeout):
                return await self._open(origin)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"could not connect to {origin.host}:{origin.port} within {timeout} s"
            ) from exc
        except (OSError, ssl_module.SSLError) as exc:
            raise httpx.ConnectError(
                f"could not connect to {origin.host}:{origin.port}: {exc}"
            ) from exc

    async def _open(self, origin: _Origin) -> _Connection:
        addresses = await self._resolve(origin.host, origin.port)
        ssl = self._context() if origin.tls else None
        error: OSError | None = None
        for family, _, proto, _, address in addresses:
            try:
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    host=address[0],
                    port=address[1],
                    family=family,
                    proto=proto,
                    ssl=ssl,
                    server_hostname=origin.host if ssl is not None else None,
                )
            except OSError as exc:
                error = exc
                continue
            assert isinstance(conn, _Connection)
            if self.closed:
                conn._close()
                raise RuntimeError("the HTTP/1.1 pool is closed")
            self._all.add(conn)
            return conn
        raise error or OSError(f"no address for {origin.host}")

    async def _resolve(self, host: str, port: int) -> list[Any]:
        """``getaddrinfo`` for (host, port), shared by concurrent callers, kept ``_DNS_TTL_S``."""
        key = (host, port)
        cached = self._dns.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._resolving.get(key)
        if pending is None:
            pending = self._resolving[key] = self.loop.create_future()
            try:
                found = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved here: concurrent waiters get it too
                raise
            finally:
                del self._resolving[key]
            self._dns[key] = (time.monotonic() + _DNS_TTL_S, found)
            pending.set_result(found)
            return found
        return await asyncio.shield(pending)

    def _context(self) -> ssl_module.SSLContext:
        context = self._ssl_context
        if context is None:
            option = self._ssl_option
            if isinstance(option, ssl_module.SSLContext):
                context = option
            elif option:
                context = httpx.create_ssl_context()  # httpx's trust: certifi's bundle
            else:
                context = ssl_module.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl_module.CERT_NONE
            self._ssl_context = context
        return context

    # -- read timeouts --------------------------------------------------------------------------

    def _watch(self, read_timeout: float) -> None:
        """Make sure the periodic check runs, often enough for ``read_timeout``."""
        period = min(1.0, max(0.005, read_timeout / 10))
        if self._timer is None or period < self._period:
            if self._timer is not None:
                self._timer.cancel()
            self._period = period
            self._timer = self.loop.call_later(period, self._check)

    def _check(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._busy if c.timed_out(now)]:
            conn._fail(httpx.ReadTimeout(f"no reply bytes for {conn.read_timeout} s"))
        self._timer = self.loop.call_later(self._period, self._check) if self._busy else None

    # -- closing --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """:meth:`close`, then wait (up to a second) until the sockets are closed."""
        open_ = [c for c in self._all if c.transport is not None]
        for conn in open_:
            conn.lost = self.loop.create_future()
        self.close()
        waiting = [c.lost for c in open_ if c.lost is not None and not c.lost.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=1.0)

    def close(self) -> None:
        """Close every connection; requests in flight fail with RemoteProtocolError."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self._all):
            conn._fail(httpx.RemoteProtocolError("the client closed the connection"))
        self._all.clear()
        self._busy.clear()
        for origin in self._by_key.values():
            origin.idle.clear()


def header_block(headers: list[tuple[str, str]]) -> bytes:
    """One ``Name: value`` line (CRLF-terminated) per header, latin-1 as httpx encodes them."""
    lines = []
    for name, value in headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


__all__ = ["Http1Pool", "RawResponse", "ReplyHeaders", "header_block"]
