"""afperturb's own HTTP/1.1 pool (the backends' fast path), against a scripted loopback server.

Each test scripts the raw bytes the server answers with, so framing (Content-Length, chunked,
read-to-close, interim 1xx), keep-alive reuse, stale connections, timeouts and broken replies
are checked byte for byte; the transport tests (test_transport.py) check what is sent against
httpx's own stack.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from afperturb.models._http1 import Http1Pool, ReplyHeaders, header_block
from afperturb.models._transport import make_async_client

#: What the server does with one request: the byte pieces to send (a float: pause that many
#: seconds), then whether to hang up.
Script = Callable[[bytes, int], tuple[list[bytes | float], bool]]


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Scripted:
    """A loopback HTTP/1.1 server answering each request with ``script(body, n)``'s bytes.

    Records every request (head and body) and counts connections.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                pieces, hang_up = self.script(body, len(self.requests))
                for piece in pieces:
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                        continue
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)  # separate reads on the client side
                if hang_up:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], asyncio.Future[Scripted]]]:
    servers: list[Scripted] = []

    async def start(script: Script) -> Scripted:
        s = Scripted(script)
        s.server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        s.port = s.server.sockets[0].getsockname()[1]
        servers.append(s)
        return s

    yield start  # type: ignore[misc]
    for s in servers:
        assert s.server is not None
        s.server.close()
        for w in s.writers:
            w.transport.abort()
        await s.server.wait_closed()


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    p = Http1Pool(asyncio.get_running_loop())
    yield p
    p.close()


HEAD = header_block([("Content-Type", "application/json")])
T = {"connect": 2.0, "read": 2.0, "pool": 2.0}


def bytewise(data: bytes) -> list[bytes | float]:
    return [data[i : i + 1] for i in range(len(data))]


async def test_content_length_reply_in_pieces_and_keep_alive_reuse(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    server = await serve(lambda body, n: (bytewise(ok(b'{"n":%d}' % n)), False))
    for n in (1, 2, 3):
        reply = await pool.post(server.url, HEAD, b'{"q":1}', T)
        assert (reply.status_code, reply.reason_phrase, reply.content) == (
            200,
            "OK",
            b'{"n":%d}' % n,
        )
    assert server.connections == 1  # one keep-alive connection served all three
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port)
    assert b"Content-Type: application/json\r\nContent-Length: 7\r\n\r\n" in head
    assert body == b'{"q":1}'


async def test_chunked_reply_with_extensions_and_trailers(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Id: a\r\nx-id: b\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: t\r\n\r\n"
    )
    server = await serve(lambda body, n: (bytewise(chunked) if n == 1 else [chunked], False))
    for _ in range(2):
        reply = await pool.post(server.url, HEAD, b"{}", T)
        assert reply.content == b"hello world"
        assert reply.headers["X-ID"] == "a, b" and "x-id" in reply.headers
        assert reply.raw_headers[1:] == [(b"X-Id", b"a"), (b"x-id", b"b")]
    assert server.connections == 1


async def test_interim_reply_no_body_statuses_and_read_to_close(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    def script(body: bytes, n: int) -> tuple[list[bytes | float], bool]:
        if n == 1:
            return [b"HTTP/1.1 100 Continue\r\n\r\n", ok(b"after")], False
        if n == 2:
            return [b"HTTP/1.1 204 No Content\r\n\r\n"], False
        return [b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the end"], True

    server = await serve(script)
    assert (await pool.post(server.url, HEAD, b"", T)).content == b"after"
    assert (await pool.post(server.url, HEAD, b"", T)).status_code == 204
    assert (await pool.post(server.url, HEAD, b"", T)).content == b"until the end"
    assert server.connections == 1


async def test_connection_close_and_stale_idle_connections_are_replaced(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    # Request 1 is answered with "Connection: close"; request 2 on a new connection, after
    # which the server hangs up while the connection sits idle; request 3 finds it dead (or
    # stale: the server closes it without a reply) and is sent once more, on a fresh one.
    def script(body: bytes, n: int) -> tuple[list[bytes | float], bool]:
        if n == 1:
            return [ok(extra=b"Connection: close\r\n")], True
        return [ok()], n == 2

    server = await serve(script)
    for _ in range(3):
        assert (await pool.post(server.url, HEAD, b"{}", T)).status_code == 200
    assert server.connections == 3 and len(server.requests) == 3


async def test_a_reused_connection_closed_before_replying_is_retried_once(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    # The race the retry exists for: the request reaches a keep-alive connection the server
    # closes without answering. Resent once on a fresh connection; a fresh one that does the
    # same is an error, not a loop.
    def script(body: bytes, n: int) -> tuple[list[bytes | float], bool]:
        return ([ok()], False) if n == 1 or body == b"fine" else ([], True)

    server = await serve(script)
    await pool.post(server.url, HEAD, b"{}", T)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a reply"):
        await pool.post(server.url, HEAD, b"{}", T)
    assert server.connections == 2 and len(server.requests) == 3  # the resend, then no more
    assert (await pool.post(server.url, HEAD, b"fine", T)).status_code == 200


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"SMTP ready\r\n\r\n", "not an HTTP/1.x reply"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n12", "longer than its Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Enc"),
        (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "longer than 64 KiB"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "disconnected mid-reply"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
    ],
)
async def test_broken_replies_are_protocol_errors_and_the_connection_is_dropped(
    serve: Callable[[Script], asyncio.Future[Scripted]],
    pool: Http1Pool,
    reply: bytes,
    message: str,
) -> None:
    server = await serve(lambda body, n: ([reply], True) if n == 1 else ([ok()], False))
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        await pool.post(server.url, HEAD, b"{}", T)
    assert (await pool.post(server.url, HEAD, b"{}", T)).status_code == 200
    assert server.connections == 2


async def test_read_timeout_is_silence_not_total_time(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    # The reply's first bytes arrive, then silence: a read timeout, and the connection (its
    # reply half read) is dropped. A reply slower in total than the timeout but never silent
    # that long is fine.
    def script(body: bytes, n: int) -> tuple[list[bytes | float], bool]:
        if body == b"stall":
            return [ok()[:20]], False
        if body == b"trickle":
            reply = ok(b"0123456789")
            return [reply[:10], 0.04, reply[10:20], 0.04, reply[20:30], 0.04, reply[30:]], False
        return [ok()], False

    server = await serve(script)
    with pytest.raises(httpx.ReadTimeout):
        # Bounded here too: a pool that never times out fails the test instead of hanging it.
        await asyncio.wait_for(pool.post(server.url, HEAD, b"stall", {**T, "read": 0.1}), 5)
    assert not pool._busy and not pool._all
    assert (await pool.post(server.url, HEAD, b"{}", {**T, "read": 0.1})).status_code == 200
    assert server.connections == 2
    slow = await pool.post(server.url, HEAD, b"trickle", {**T, "read": 0.1})  # 0.12 s in all
    assert slow.content == b"0123456789"


async def test_cancelled_request_drops_its_connection(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    server = await serve(lambda body, n: ([], False) if n == 1 else ([ok()], False))
    task = asyncio.ensure_future(pool.post(server.url, HEAD, b"{}", T))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pool._busy and not pool._all
    assert (await pool.post(server.url, HEAD, b"{}", T)).status_code == 200
    assert server.connections == 2


async def test_idle_connections_expire_after_keepalive_timeout(
    serve: Callable[[Script], asyncio.Future[Scripted]],
) -> None:
    server = await serve(lambda body, n: ([ok()], False))
    pool = Http1Pool(asyncio.get_running_loop(), keepalive_timeout=0.05)
    try:
        await pool.post(server.url, HEAD, b"{}", T)
        await asyncio.sleep(0.1)
        await pool.post(server.url, HEAD, b"{}", T)
    finally:
        pool.close()
    assert server.connections == 2


async def test_concurrent_connects_resolve_the_host_once(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    server = await serve(lambda body, n: ([ok()], False))
    loop = asyncio.get_running_loop()
    calls = 0
    real = loop.getaddrinfo

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    loop.getaddrinfo = counting  # type: ignore[method-assign,assignment]
    try:
        url = f"http://localhost:{server.port}/x"
        replies = await asyncio.gather(*(pool.post(url, HEAD, b"{}", T) for _ in range(20)))
    finally:
        del loop.getaddrinfo
    assert [r.status_code for r in replies] == [200] * 20
    assert calls == 1 and server.connections == 20


async def test_connect_errors_closed_pool_and_urls_it_does_not_send(pool: Http1Pool) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await pool.post(f"http://127.0.0.1:{port}/", HEAD, b"{}", T)
    with pytest.raises(ValueError, match="plain http"):
        await pool.post(f"http://user:pw@127.0.0.1:{port}/", HEAD, b"{}", T)
    with pytest.raises(ValueError, match="plain http"):
        await pool.post("ftp://example.org/", HEAD, b"{}", T)
    with pytest.raises(ValueError, match="line break"):
        header_block([("X-Evil", "a\r\nInjected: 1")])
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        await pool.post(f"http://127.0.0.1:{port}/", HEAD, b"{}", T)


async def test_closing_the_pool_fails_requests_in_flight(
    serve: Callable[[Script], asyncio.Future[Scripted]], pool: Http1Pool
) -> None:
    server = await serve(lambda body, n: ([], False))
    task = asyncio.ensure_future(pool.post(server.url, HEAD, b"{}", T))
    await asyncio.sleep(0.05)
    pool.close()
    with pytest.raises(httpx.RemoteProtocolError, match="client closed"):
        await task


def test_reply_headers_are_case_insensitive() -> None:
    headers = ReplyHeaders({"content-type": "application/json"})
    assert headers["Content-Type"] == headers.get("CONTENT-TYPE") == "application/json"
    assert "Content-type" in headers and headers.get("x", 1) == 1


# -- TLS: a self-signed certificate made with the openssl command line --------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_verifies_against_the_given_context_and_refuses_unknown_issuers(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = Scripted(lambda body, n: ([ok(b"secure")], False))
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    port = server.server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/v1"
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with make_async_client(verify=trusting) as client:
            reply = await client.post_bytes(url, b"{}", {"Content-Type": "application/json"})  # type: ignore[attr-defined]
            assert reply.status_code == 200 and reply.content == b"secure"
        async with make_async_client(verify=False) as client:
            reply = await client.post_bytes(url, b"{}", {"Content-Type": "application/json"})  # type: ignore[attr-defined]
            assert reply.content == b"secure"
        async with make_async_client() as client:  # the system's CAs do not know this one
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.post_bytes(url, b"{}", {"Content-Type": "application/json"})  # type: ignore[attr-defined]
    finally:
        server.server.close()
        for w in server.writers:
            w.transport.abort()
        await server.server.wait_closed()


async def test_lean_client_decodes_a_chunked_gzip_reply_from_the_pool(
    serve: Callable[[Script], asyncio.Future[Scripted]],
) -> None:
    """What hosted APIs behind a CDN send: gzip, chunked. The pool returns the raw bytes;
    the lean client hands them to httpx, which decodes them."""
    import gzip

    packed = gzip.compress(b'{"choices": []}')
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, packed[:10])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed) - 10, packed[10:])
    )
    server = await serve(lambda body, n: ([reply], False))
    async with make_async_client() as client:
        got = await client.post_bytes(server.url, b"{}", {"Content-Type": "application/json"})  # type: ignore[attr-defined]
    assert isinstance(got, httpx.Response) and got.json() == {"choices": []}


async def test_httpx_posts_take_the_pool_and_errors_carry_their_request(
    serve: Callable[[Script], asyncio.Future[Scripted]],
) -> None:
    """``client.post`` (the lean client's httpx path, the batch API's uploads) goes through
    the pool too: one keep-alive connection, httpx's headers, the request on an error. A
    request naming another Host than its URL is left to aiohttp (the pool writes Host)."""
    server = await serve(
        lambda body, n: ([b"garbage\r\n\r\n"], True) if body == b'{"bad":1}' else ([ok()], False)
    )
    async with make_async_client() as client:
        for _ in range(3):
            reply = await client.post(server.url, json={"q": 1})
            assert reply.json() == {"ok": True} and reply.request.method == "POST"
        assert server.connections == 1
        entry = client._transport._current  # type: ignore[attr-defined]
        assert entry.pool is not None and len(entry.pool._all) == 1  # the pool's connection
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.post(server.url, json={"bad": 1})
        assert caught.value.request.url == server.url
        other = await client.post(server.url, json={"q": 2}, headers={"Host": "example.org"})
        assert other.status_code == 200
    heads = [head for head, _ in server.requests]
    assert b"Host: example.org" in heads[-1] and heads[0].count(b"Host:") == 1
    assert b"User-Agent: python-httpx/" in heads[0] and b"Content-Length: 7" in heads[0]
