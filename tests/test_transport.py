"""The aiohttp-backed httpx transport, against real loopback sockets.

An echo server (below) checks protocol details: what the transport sends is what the server
saw, and what the server sent is what httpx returns. The benchmark's loopback server
(benchmarks/loopback_server.py) checks scale and the provider backends end to end.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from _loopback import load_benchmark_server

from afperturb import models
from afperturb.errors import BackendResponseError, BackendTimeout, DesignError, RateLimited
from afperturb.models import _transport
from afperturb.models._transport import AiohttpTransport, make_async_client
from afperturb.models.base import is_retryable
from afperturb.records import Message, SamplingParams

bench = load_benchmark_server()


# -- an echo server for protocol details ------------------------------------------------------


class Echo:
    """HTTP/1.1 keep-alive server; the path picks the behaviour, see ``_reply``."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head[:-4].split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines]
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                body = await reader.readexactly(length)
                if not await self._reply(writer, method, target, headers, body):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: list[tuple[str, ...]],
        body: bytes,
    ) -> bool:
        path = target.split("?", 1)[0]
        if path == "/hang":
            await asyncio.sleep(30)
            return False
        if path == "/close":
            writer.transport.abort()
            return False
        if path == "/garbage":
            writer.write(b"this is not HTTP at all\r\n\r\n")
            await writer.drain()
            writer.close()
            return False
        status, extra = 200, [("content-type", "application/json")]
        payload = json.dumps(
            {
                "method": method,
                "target": target,
                "headers": [[k.lower(), v] for k, v in headers],
                "body": body.decode("latin-1"),
            }
        ).encode()
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            extra.append(("retry-after", "7"))
        if path == "/multi":
            extra += [("x-multi", "one"), ("x-multi", "two"), ("set-cookie", "a=1")]
        if path == "/gzip":
            payload = gzip.compress(payload)
            extra.append(("content-encoding", "gzip"))
        if path == "/redirect":
            status = 302
            extra.append(("location", "/landed"))
        if path.startswith("/big"):
            payload = b'{"pad": "' + b"x" * 5000 + b'"}'
        if path == "/chunked-big":  # no Content-Length: the cap applies while reading
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(10):
                writer.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        head = f"HTTP/1.1 {status} Custom Reason\r\ncontent-length: {len(payload)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in extra)
        writer.write(head.encode() + b"\r\n" + payload)
        await writer.drain()
        return True


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    c = make_async_client(concurrency=16, timeout=5.0)
    yield c
    await c.aclose()


def _seen(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    data["headers"] = dict(data["headers"])
    return data


# -- protocol round trips ---------------------------------------------------------------------


async def test_get_round_trips_query_headers_status_and_reason(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    response = await client.get(
        echo.url + "/path", params={"q": "a b", "n": "2"}, headers={"X-Custom": "yes"}
    )
    seen = _seen(response)
    assert response.status_code == 200
    assert response.reason_phrase == "Custom Reason"
    assert response.http_version == "HTTP/1.1"
    assert seen["method"] == "GET"
    assert seen["target"] == "/path?q=a+b&n=2"
    assert seen["headers"]["x-custom"] == "yes"
    assert seen["headers"]["host"] == f"127.0.0.1:{echo.port}"
    assert seen["body"] == ""
    assert response.request.url == httpx.URL(echo.url + "/path?q=a+b&n=2")
    assert response.elapsed.total_seconds() > 0


async def test_post_json_and_bytes_bodies_arrive_intact(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "héllo {{ 7*7 }}"}]}
    seen = _seen(await client.post(echo.url + "/v1/chat", json=payload))
    assert json.loads(seen["body"].encode("latin-1")) == payload
    assert seen["headers"]["content-type"] == "application/json"
    assert int(seen["headers"]["content-length"]) == len(seen["body"].encode("latin-1"))
    raw = bytes(range(256)) * 40
    seen = _seen(await client.post(echo.url + "/bytes", content=raw))
    assert seen["body"].encode("latin-1") == raw
    assert seen["headers"]["content-length"] == str(len(raw))


async def test_streamed_request_body_is_sent_whole(echo: Echo, client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"abc", b"def", b"ghi"):
            yield part

    # httpx sends an async iterator chunked; the transport reads it and sends Content-Length.
    seen = _seen(await client.post(echo.url + "/stream", content=chunks()))
    assert seen["body"] == "abcdefghi"
    assert seen["headers"]["content-length"] == "9"


async def test_repeated_response_headers_are_all_kept(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    response = await client.get(echo.url + "/multi")
    assert response.headers.get_list("x-multi") == ["one", "two"]


async def test_error_statuses_are_returned_not_raised(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    for status in (400, 404, 429, 500, 503):
        response = await client.post(echo.url + f"/status/{status}", json={})
        assert response.status_code == status
        assert response.headers["retry-after"] == "7"


async def test_gzip_bodies_are_decoded_once_under_the_cap(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    """The transport inflates gzip itself (bounded) and drops the header: httpx decodes none."""
    response = await client.get(echo.url + "/gzip")
    assert "content-encoding" not in response.headers
    assert _seen(response)["method"] == "GET"


async def test_keep_alive_reuses_connections(echo: Echo, client: httpx.AsyncClient) -> None:
    for _ in range(20):
        await client.get(echo.url + "/x")
    assert echo.connections == 1


# -- failures map to the httpx exceptions the backends catch ------------------------------------


async def test_read_timeout_maps_to_httpx_timeout(echo: Echo) -> None:
    async with make_async_client(timeout=0.2) as c:
        with pytest.raises(httpx.ReadTimeout) as info:
            await c.get(echo.url + "/hang")
    assert isinstance(info.value, httpx.TimeoutException)
    assert info.value.request.url.path == "/hang"


async def test_per_request_timeout_overrides_the_client_default(echo: Echo) -> None:
    async with make_async_client(timeout=30.0) as c:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(httpx.TimeoutException):
            await c.get(echo.url + "/hang", timeout=0.15)
        assert loop.time() - start < 5.0


async def test_waiting_for_a_pooled_connection_times_out(echo: Echo) -> None:
    timeout = httpx.Timeout(5.0, pool=0.1)
    async with make_async_client(concurrency=1, timeout=timeout) as c:
        hanging = asyncio.ensure_future(c.get(echo.url + "/hang"))
        await asyncio.sleep(0.05)
        start = asyncio.get_running_loop().time()
        with pytest.raises(httpx.PoolTimeout):
            await c.get(echo.url + "/x")
        assert asyncio.get_running_loop().time() - start < 2.0
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging


async def test_connection_refused_maps_to_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with make_async_client(timeout=5.0) as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/")


async def test_dropped_connection_and_garbage_map_to_transport_errors(echo: Echo) -> None:
    async with make_async_client(timeout=5.0) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(echo.url + "/close")
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(echo.url + "/garbage")
        # The client is still usable afterwards.
        assert (await c.get(echo.url + "/ok")).status_code == 200


async def test_unsupported_scheme_maps_to_unsupported_protocol() -> None:
    transport = AiohttpTransport()
    try:
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
    finally:
        await transport.aclose()


# -- scale, lifetime, loops -------------------------------------------------------------------


async def test_a_thousand_requests_in_flight_all_complete() -> None:
    async with bench.LoopbackServer(latency=0.2) as server:
        async with make_async_client(concurrency=1000, timeout=30.0) as c:
            url = server.base_url + "/chat/completions"

            async def one(i: int) -> str:
                r = await c.post(url, json={"model": "m", "messages": [], "i": i})
                return str(r.json()["choices"][0]["message"]["content"])

            async with asyncio.timeout(60):
                texts = await asyncio.gather(*(one(i) for i in range(1000)))
        assert len(texts) == 1000
        assert all(t.endswith("</OUTPUT>") for t in texts)
        assert server.requests == 1000
        # All 1,000 were open at once: the pool did not serialise them.
        assert server.max_in_flight >= 900


async def test_aclose_closes_the_session_and_refuses_new_requests(echo: Echo) -> None:
    transport = AiohttpTransport(limit=4)
    c = httpx.AsyncClient(transport=transport)
    assert (await c.get(echo.url + "/x")).status_code == 200
    session = transport._session
    assert session is not None and not session.closed
    await c.aclose()
    assert session.closed
    with pytest.raises(RuntimeError):
        await c.get(echo.url + "/x")
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", echo.url))
    assert "closed" in repr(transport)


def test_client_built_outside_a_loop_works_in_successive_loops() -> None:
    """A notebook builds a client once, then each sweep() runs in a new event loop."""
    c = make_async_client(concurrency=8, timeout=5.0)
    transport = c._transport
    assert isinstance(transport, AiohttpTransport)
    assert "idle" in repr(transport)

    async def one_round() -> int:
        server = Echo()
        await server.start()
        try:
            fast = await c.post_bytes(server.url + "/fast", b"{}", _JSON_HEADERS)  # type: ignore[attr-defined]
            assert fast.status_code == 200  # the backends' path: afperturb's HTTP/1.1 pool
            return (await c.get(server.url + "/x")).status_code
        finally:
            await server.stop()

    assert asyncio.run(one_round()) == 200
    first = transport._session
    # asyncio.run shut the loop's async generators down, and with them the session.
    assert first is not None and first.closed
    assert asyncio.run(one_round()) == 200
    second = transport._session
    assert second is not first and second is not None and second.closed

    # A loop closed by hand (no shutdown_asyncgens): its session is abandoned quietly.
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(one_round()) == 200
    third = transport._session
    assert third is not None and not third.closed
    # Let the client see the server hang up first: sockets of a dead loop cannot be closed.
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()
    assert asyncio.run(one_round()) == 200
    assert third.closed

    async def close() -> None:
        await c.aclose()

    asyncio.run(close())
    assert transport._session is None
    assert "closed" in repr(transport)


# -- the lean client keeps httpx's behaviour where it matters -----------------------------------


async def test_configured_auth_hooks_and_redirects_take_httpx_path(echo: Echo) -> None:
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with make_async_client(
        auth=("user", "pw"), event_hooks={"request": [hook]}, follow_redirects=True
    ) as c:
        response = await c.get(echo.url + "/redirect")
    assert response.url.path == "/landed"
    assert [r.status_code for r in response.history] == [302]
    assert seen == ["/redirect", "/landed"]
    assert _seen(response)["headers"]["authorization"].startswith("Basic ")


async def test_lean_path_logs_like_httpx(
    echo: Echo, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        await client.get(echo.url + "/logged")
    assert any("/logged" in r.getMessage() and "200" in r.getMessage() for r in caplog.records)


async def test_streaming_falls_back_to_httpx_send(echo: Echo, client: httpx.AsyncClient) -> None:
    async with client.stream("GET", echo.url + "/streamed") as response:
        body = await response.aread()
    assert json.loads(body)["target"] == "/streamed"


async def test_plain_httpx_transport_option_works(echo: Echo) -> None:
    async with make_async_client(transport="httpx", concurrency=4, timeout=5.0) as c:
        assert isinstance(c._transport, httpx.AsyncHTTPTransport)
        assert _seen(await c.post(echo.url + "/p", json={"a": 1}))["body"] == '{"a":1}'


async def test_lean_false_gives_a_plain_async_client(echo: Echo) -> None:
    async with make_async_client(lean=False) as c:
        assert type(c) is httpx.AsyncClient
        assert (await c.get(echo.url + "/x")).status_code == 200


def test_bad_arguments_name_the_valid_choices() -> None:
    with pytest.raises(DesignError, match="'aiohttp', 'httpx'"):
        make_async_client(transport="h2")  # type: ignore[arg-type]
    with pytest.raises(DesignError, match="concurrency"):
        make_async_client(concurrency=0)
    with pytest.raises(ValueError, match="limit"):
        AiohttpTransport(limit=0)


def test_falls_back_to_httpx_when_aiohttp_is_missing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_transport, "aiohttp_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger=_transport.__name__):
        c = make_async_client()
    assert isinstance(c._transport, httpx.AsyncHTTPTransport)
    assert "aiohttp is not installed" in caplog.text


# -- the provider backends over this transport --------------------------------------------------


async def test_backends_get_completions_and_mapped_errors() -> None:
    from afperturb.models import AnthropicMessages, OpenAIChat, OpenAICompletions

    messages = [Message(role="system", content="s"), Message(role="user", content="u")]
    params = SamplingParams(max_tokens=16)
    async with (
        bench.LoopbackServer(retry_after=0.25) as server,
        make_async_client(concurrency=8, timeout=1.0) as c,
    ):
        base = server.base_url
        for backend in (
            OpenAIChat("m", base_url=base, api_key="k", client=c),
            OpenAICompletions("m", base_url=base, api_key="k", client=c),
            AnthropicMessages("m", base_url=base, api_key="k", client=c),
        ):
            completion = await backend.generate(messages, params)
            assert completion.text.endswith("</OUTPUT>"), type(backend).__name__

        chat = OpenAIChat("m", base_url=base, api_key="k", client=c)
        server.script(["429", "500", "malformed", "hang"])
        with pytest.raises(RateLimited) as limited:
            await chat.generate(messages, params)
        assert limited.value.retry_after == pytest.approx(0.25)
        with pytest.raises(BackendResponseError) as failed:
            await chat.generate(messages, params)
        assert failed.value.status_code == 500 and failed.value.retryable
        with pytest.raises(BackendResponseError):
            await chat.generate(messages, params)
        with pytest.raises(BackendTimeout):
            await chat.generate(messages, params)
    assert server.by_fault == {"429": 1, "500": 1, "malformed": 1, "hang": 1}


async def test_backend_maps_connection_refused_to_backend_timeout() -> None:
    from afperturb.models import OpenAIChat

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with make_async_client(timeout=2.0) as c:
        chat = OpenAIChat("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", client=c)
        with pytest.raises(BackendTimeout):
            await chat.generate([Message(role="user", content="u")], SamplingParams())


# -- the benchmark's server itself ------------------------------------------------------------


async def test_benchmark_server_faults_stats_and_choices() -> None:
    async with (
        bench.LoopbackServer(faults={"500": 1.0}) as server,
        make_async_client(timeout=2.0) as c,
    ):
        url = server.base_url + "/chat/completions"
        assert (await c.post(url, json={})).status_code == 500
        server.faults.clear()
        server.script(["truncated"])
        text = (await c.post(url, json={})).json()["choices"][0]["message"]["content"]
        assert "</OUTPUT>" not in text and text.startswith("<SCRATCHPAD_REASONING>")
        choices = (await c.post(url, json={"n": 3})).json()["choices"]
        assert len(choices) == 3
        forced = await c.post(url, json={}, headers={"x-loopback-fault": "429"})
        assert forced.status_code == 429 and forced.headers["retry-after-ms"] == "50"
        stats = (await c.get(f"http://127.0.0.1:{server.port}/stats")).json()
    assert stats["requests"] == 4
    assert stats["by_fault"] == {"500": 1, "truncated": 1, "429": 1}
    with pytest.raises(ValueError, match="valid faults"):
        bench.LoopbackServer(faults={"teapot": 0.5})


async def test_benchmark_server_enforces_rpm_with_headers() -> None:
    async with (
        bench.LoopbackServer(rpm=120) as server,  # a burst of 2, then 2/s
        make_async_client(timeout=2.0) as c,
    ):
        url = server.base_url + "/messages"
        statuses = [(await c.post(url, json={})).status_code for _ in range(3)]
        last = await c.post(url, json={})
    assert statuses == [200, 200, 429]
    assert last.headers["x-ratelimit-limit-requests"] == "120"
    assert int(last.headers["retry-after-ms"]) > 0


def test_benchmark_server_runs_as_a_process() -> None:
    with bench.spawn(latency=0.0) as proc:
        response = httpx.post(proc.base_url + "/chat/completions", json={"model": "m"})
        assert response.status_code == 200
        assert proc.stats()["requests"] == 1


# -- the lean client builds the same requests as httpx -----------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("POST", {"json": {"model": "m", "x": ["é", 1.5, None]}}),
        ("POST", {"json": {"a": 1}, "headers": {"Authorization": "Bearer k", "X-A": "1"}}),
        ("POST", {"content": b"raw bytes", "headers": {"content-type": "text/plain"}}),
        ("POST", {}),
        ("GET", {"headers": {"user-agent": "mine", "Host": "example.org"}}),
        ("PUT", {"json": [1, 2], "timeout": 3.0}),
        ("POST", {"json": {"a": 1}, "params": {"q": "1"}}),  # httpx's own path
        ("GET", {"cookies": {"c": "1"}}),  # httpx's own path
    ],
)
def test_lean_requests_equal_httpx_requests(method: str, kwargs: dict[str, Any]) -> None:
    timeout = httpx.Timeout(9.0, connect=2.0)
    lean = make_async_client(headers={"x-client": "c"}, timeout=timeout)
    plain = httpx.AsyncClient(headers={"x-client": "c"}, timeout=timeout)
    url = "http://127.0.0.1:8/v1/chat/completions"
    ours, theirs = (
        lean.build_request(method, url, **kwargs),
        plain.build_request(method, url, **kwargs),
    )
    assert ours.method == theirs.method
    assert ours.url == theirs.url
    assert ours.content == theirs.content
    assert sorted(ours.headers.multi_items()) == sorted(theirs.headers.multi_items())
    assert ours.extensions == theirs.extensions


async def test_relative_urls_and_base_url_take_httpx_path(echo: Echo) -> None:
    async with make_async_client(base_url=echo.url + "/api/") as c:
        seen = _seen(await c.post("v1/chat", json={"a": 1}))
    assert seen["target"] == "/api/v1/chat"
    assert seen["body"] == '{"a":1}'


def test_verify_maps_to_aiohttp_ssl() -> None:
    import ssl

    context = ssl.create_default_context()
    default = _transport._ssl_for(True)  # httpx's default: certifi's bundle, verified
    assert isinstance(default, ssl.SSLContext) and default.check_hostname
    assert default.verify_mode == ssl.CERT_REQUIRED and default.get_ca_certs()
    assert _transport._ssl_for(False) is False
    assert _transport._ssl_for(context) is context
    with pytest.raises(TypeError, match="verify"):
        _transport._ssl_for(3)
    unverified = make_async_client(verify=False)._transport
    assert isinstance(unverified, AiohttpTransport)
    assert unverified._connector_kwargs["ssl"] is False


# -- the backends' fast path: post_bytes without httpx objects ------------------------------------

_JSON_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer k"}


def _header_pairs(seen: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in seen["headers"].items())


async def test_post_bytes_sends_what_httpx_sends(echo: Echo, client: httpx.AsyncClient) -> None:
    from afperturb.models._transport import RawResponse

    assert isinstance(client, _transport._LeanAsyncClient)
    body = json.dumps({"messages": [{"role": "user", "content": "héllo"}]}).encode()
    fast = await client.post_bytes(echo.url + "/v1/chat", body, _JSON_HEADERS)
    assert isinstance(fast, RawResponse)
    seen_fast = fast.json()
    seen_fast["headers"] = dict(seen_fast["headers"])
    # The same request through httpx's ordinary client over the same transport ...
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5.0) as ordinary:
        via_httpx = _seen(
            await ordinary.post(echo.url + "/v1/chat", content=body, headers=_JSON_HEADERS)
        )
    assert _header_pairs(seen_fast) == _header_pairs(via_httpx)
    # ... and through httpx's own stack (httpcore writes httpx's headers verbatim), which also
    # sends the HTTP/1.1 default "Connection: keep-alive" that aiohttp leaves implicit.
    async with httpx.AsyncClient(timeout=5.0) as plain:
        slow = _seen(await plain.post(echo.url + "/v1/chat", content=body, headers=_JSON_HEADERS))
    assert slow["headers"].pop("connection") == "keep-alive"
    assert _header_pairs(seen_fast) == _header_pairs(slow)
    assert seen_fast["body"] == via_httpx["body"] == slow["body"] == body.decode("latin-1")
    assert seen_fast["method"] == "POST" and seen_fast["target"] == "/v1/chat"
    assert fast.status_code == 200 and fast.reason_phrase == "Custom Reason"
    assert fast.headers["Content-Type"] == "application/json"  # case-insensitive
    assert fast.encoding == "utf-8" and fast.text == fast.content.decode()


async def test_post_bytes_headers_override_the_clients(echo: Echo) -> None:
    async with make_async_client(headers={"User-Agent": "mine", "X-Team": "a"}) as c:
        reply = await c.post_bytes(  # type: ignore[attr-defined]
            echo.url + "/h", b"{}", {**_JSON_HEADERS, "x-team": "b"}
        )
    seen = dict(reply.json()["headers"])
    assert seen["user-agent"] == "mine" and seen["x-team"] == "b"
    assert reply.json()["headers"].count(["x-team", "b"]) == 1


async def test_post_bytes_returns_error_statuses_and_decodes_gzip(
    echo: Echo, client: httpx.AsyncClient
) -> None:
    lean = client
    assert isinstance(lean, _transport._LeanAsyncClient)
    limited = await lean.post_bytes(echo.url + "/status/429", b"{}", _JSON_HEADERS)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    zipped = await lean.post_bytes(echo.url + "/gzip", b"{}", _JSON_HEADERS)
    assert isinstance(zipped, _transport.RawResponse)  # inflated by the transport, capped
    assert zipped.json()["target"] == "/gzip" and "content-encoding" not in zipped.headers


async def test_post_bytes_maps_failures_like_the_transport(echo: Echo) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with make_async_client(concurrency=1, timeout=httpx.Timeout(0.2, pool=0.1)) as c:
        assert isinstance(c, _transport._LeanAsyncClient)
        with pytest.raises(httpx.ReadTimeout):
            await c.post_bytes(echo.url + "/hang", b"{}", _JSON_HEADERS)
        with pytest.raises(httpx.RemoteProtocolError):
            await c.post_bytes(echo.url + "/garbage", b"{}", _JSON_HEADERS)
        with pytest.raises(httpx.ConnectError):
            await c.post_bytes(f"http://127.0.0.1:{port}/", b"{}", _JSON_HEADERS)
        hanging = asyncio.ensure_future(c.post_bytes(echo.url + "/hang", b"{}", _JSON_HEADERS))
        await asyncio.sleep(0.02)
        with pytest.raises(httpx.PoolTimeout):
            await c.post_bytes(echo.url + "/x", b"{}", _JSON_HEADERS)
        with pytest.raises(httpx.ReadTimeout):
            await hanging
        assert (await c.post_bytes(echo.url + "/ok", b"{}", _JSON_HEADERS)).status_code == 200


async def test_post_bytes_takes_httpx_path_when_httpx_features_are_configured(
    echo: Echo, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_async_client(auth=("user", "pw")) as c:
        reply = await c.post_bytes(echo.url + "/auth", b"{}", _JSON_HEADERS)  # type: ignore[attr-defined]
    assert isinstance(reply, httpx.Response)
    assert _seen(reply)["headers"]["authorization"].startswith("Basic ")
    async with make_async_client(transport="httpx") as c:
        # httpx's own client (it mounts the environment's proxies itself): no lean path.
        assert type(c) is httpx.AsyncClient
        reply = await c.post(echo.url + "/h", content=b"{}", headers=_JSON_HEADERS)
    assert isinstance(reply, httpx.Response) and reply.status_code == 200
    async with make_async_client() as c:
        with caplog.at_level(logging.INFO, logger="httpx"):
            await c.post_bytes(echo.url + "/logged", b"{}", _JSON_HEADERS)  # type: ignore[attr-defined]
    assert any("/logged" in r.getMessage() and "200" in r.getMessage() for r in caplog.records)


def test_raw_response_charset_and_bad_charset() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from afperturb.models._transport import RawResponse

    def reply(content_type: str, body: bytes) -> RawResponse:
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": content_type}))
        return RawResponse(200, headers, (), body, "OK")

    assert reply("text/plain; charset=latin-1", "é".encode("latin-1")).text == "é"
    assert reply('text/plain; charset="utf-8"', "é".encode()).text == "é"
    assert reply("text/plain; charset=nonsense", "é".encode()).text == "é"
    assert reply("application/json", b'{"a": [1]}').json() == {"a": [1]}
    with pytest.raises(ValueError):
        reply("application/json", b"{not json").json()


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m", "messages": [{"role": "system", "content": "é " * 600 + '"\\\n\t\u2028'}]},
        {"a": 1, "b": 2.5, "c": None, "d": True, "e": False, "f": [], "g": {}, "h": [1, [2, {}]]},
        {"nested": {"x": ("t", "u")}, "long": "x" * 600, "ctrl": "\x00\x1f", "emoji": "🙂" * 300},
        {1: "non-string key", "k": "v"},
        ["top", "level", "list", 1e300, -0.0],
        "a plain string",
        3,
    ],
)
def test_encode_json_is_httpx_json_bytes(value: Any) -> None:
    from afperturb.models._http import encode_json

    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert encode_json(value) == expected.encode("utf-8")
    assert encode_json(value) == expected.encode("utf-8")  # memoised long strings too


def test_encode_json_refuses_nan_like_httpx() -> None:
    from afperturb.models._http import encode_json

    with pytest.raises(ValueError):
        encode_json({"t": float("nan")})


# -- issue 17: cancellation, body cap, slots ------------------------------------------------


async def test_cancelling_one_request_during_a_shared_dns_lookup_ends_only_that_one(
    echo: Echo,
) -> None:
    """Five requests wait on one slow lookup of the same host; one is cancelled: four finish."""
    import aiohttp
    from aiohttp.abc import AbstractResolver

    port = int(echo.url.rsplit(":", 1)[1])

    class SlowResolver(AbstractResolver):
        calls = 0

        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
            SlowResolver.calls += 1
            await asyncio.sleep(0.3)
            return [
                {"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}
            ]  # fmt: skip

        async def close(self) -> None:
            return None

    engine = _transport.AiohttpTransport(limit=8, connector_kwargs={"resolver": SlowResolver()})
    async with _transport._LeanAsyncClient(engine=engine, timeout=10.0) as c:
        url = f"http://slow.test:{port}/x"
        tasks = [asyncio.ensure_future(c.post_bytes(url, b"{}", _JSON_HEADERS)) for _ in range(5)]
        await asyncio.sleep(0.1)  # all five are waiting on the lookup
        tasks[0].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(getattr(r, "status_code", None) == 200 for r in results[1:]), results
    assert SlowResolver.calls == 1  # one shared lookup
    assert isinstance(aiohttp.__version__, str)


async def test_a_reply_over_the_body_cap_is_a_clear_non_retryable_error(echo: Echo) -> None:
    async with make_async_client(max_body_bytes=1000) as c:
        with pytest.raises(_transport.ReplyTooLarge, match="over 1000"):
            await c.post_bytes(echo.url + "/big", b"{}", _JSON_HEADERS)  # type: ignore[attr-defined]
        with pytest.raises(_transport.ReplyTooLarge, match="over 1000"):
            await c.get(echo.url + "/big")
        with pytest.raises(_transport.ReplyTooLarge, match="larger than 1000"):
            await c.get(echo.url + "/chunked-big")
    # A compression bomb stops at the cap, decompressed.
    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    with pytest.raises(_transport.ReplyTooLarge, match="decompressed"):
        _transport._inflate(bomb, "gzip", 1_000_000)
    assert _transport._inflate(gzip.compress(b'{"a": 1}'), "gzip", 100) == b'{"a": 1}'
    # Through a backend it is a non-retryable BackendResponseError naming the cap.
    model = models.get(
        "openai/m", base_url=echo.url + "/big", api_key="k",
        client=make_async_client(max_body_bytes=1000),
    )  # fmt: skip
    with pytest.raises(BackendResponseError, match="reply body") as info:
        await model.generate([Message(role="user", content="q")], SamplingParams())
    assert not is_retryable(info.value)


async def test_a_sweep_grows_the_backends_connection_slots_to_its_concurrency() -> None:
    model = models.get("openai/m", base_url="http://127.0.0.1:9/v1", api_key="k")
    client = model.client
    engine = client._engine  # type: ignore[attr-defined]
    assert engine.limit == 512
    model.reserve_connections(2048)  # type: ignore[attr-defined]
    assert engine.limit == 2048
    model.reserve_connections(64)  # type: ignore[attr-defined]
    assert engine.limit == 2048  # never shrinks
    await model.aclose()
    fresh = models.get("openai/m", base_url="http://127.0.0.1:9/v1", api_key="k")
    fresh.reserve_connections(1500)  # type: ignore[attr-defined]
    assert fresh.client._engine.limit == 1500  # type: ignore[attr-defined]
    await fresh.aclose()


async def test_reserve_grows_an_open_sessions_slots(echo: Echo) -> None:
    engine = _transport.AiohttpTransport(limit=1)
    async with _transport._LeanAsyncClient(engine=engine, timeout=5.0) as c:
        await c.post_bytes(echo.url + "/x", b"{}", _JSON_HEADERS)  # opens the session
        engine.reserve(3)
        hanging = [
            asyncio.ensure_future(c.post_bytes(echo.url + "/hang", b"{}", _JSON_HEADERS))
            for _ in range(3)
        ]
        await asyncio.sleep(0.1)  # all three on the wire: three slots, none left
        assert engine._current is not None and engine._current.slots._value == 0
        for task in hanging:
            task.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)
