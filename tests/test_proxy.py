"""Proxies from the environment and ``proxy=``, through a loopback forward proxy (issue 17).

Many university and lab networks reach provider APIs only through a proxy. The proxy here
resolves every host to 127.0.0.1 (so ``provider.test``, which nothing else can resolve, is
reachable only through it), forwards what it is sent and counts it; it also plays the origin
for ``data.test`` (a dataset download).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from _loopback import load_benchmark_server

import afperturb as af
from afperturb import datasets
from afperturb.models._transport import make_async_client, proxy_for
from afperturb.records import Message, SamplingParams

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
CSV = b"goal,target\nSay something kind,Sure\n"


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1 that counts the requests it forwards."""

    def __init__(self) -> None:
        self.forwarded: list[str] = []  # "METHOD absolute-URL" of each request line seen
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ForwardProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            while True:  # one request per loop: a keep-alive client sends several
                head = await reader.readuntil(b"\r\n\r\n")
                line, _, rest = head.partition(b"\r\n")
                method, target, version = line.decode("latin-1").split(" ", 2)
                self.forwarded.append(f"{method} {target}")
                url = httpx.URL(target)
                length = 0
                for header in rest.split(b"\r\n"):
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                if url.host == "data.test":  # the proxy is this origin
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\n"
                        + f"Content-Length: {len(CSV)}\r\n\r\n".encode()
                        + CSV
                    )
                    await writer.drain()
                    continue
                up_reader, upstream = await asyncio.open_connection("127.0.0.1", url.port)
                path = url.raw_path.decode("ascii")
                upstream.write(f"{method} {path} {version}\r\n".encode() + rest + body)
                await upstream.drain()
                reply_head = await up_reader.readuntil(b"\r\n\r\n")
                reply_length = 0
                for header in reply_head.split(b"\r\n"):
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        reply_length = int(value.strip())
                reply_body = await up_reader.readexactly(reply_length)
                upstream.close()
                writer.write(reply_head + reply_body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            if upstream is not None:
                upstream.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@contextlib.asynccontextmanager
async def provider_and_proxy() -> AsyncIterator[tuple[object, ForwardProxy]]:
    bench = load_benchmark_server()
    async with bench.LoopbackServer(latency=0.001) as server, ForwardProxy() as proxy:
        yield server, proxy


async def _ask(model: af.models.Model) -> str:
    try:
        reply = await model.generate([Message(role="user", content="hi")], SamplingParams())
    finally:
        await model.aclose()
    return reply.text


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_the_default_backend_reaches_the_provider_only_through_the_proxy(
    clean_env: pytest.MonkeyPatch, variable: str
) -> None:
    async with provider_and_proxy() as (server, proxy):
        port = server.base_url.rsplit(":", 1)[1].split("/")[0]  # type: ignore[attr-defined]
        url = f"http://provider.test:{port}/v1"
        clean_env.setenv(variable, proxy.url)
        text = await _ask(af.models.get("openai/m", base_url=url, api_key="k"))
        assert text and proxy.forwarded == [f"POST {url}/chat/completions"]
        # Without the proxy the same host does not resolve: only the proxy reached it.
        clean_env.delenv(variable)
        with pytest.raises(af.errors.BackendTimeout, match="connection failed"):
            await _ask(af.models.get("openai/m", base_url=url, api_key="k"))
        assert len(proxy.forwarded) == 1


async def test_no_proxy_exempts_loopback(clean_env: pytest.MonkeyPatch) -> None:
    async with provider_and_proxy() as (server, proxy):
        clean_env.setenv("HTTP_PROXY", proxy.url)
        clean_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        base = server.base_url  # type: ignore[attr-defined]
        assert "127.0.0.1" in base
        assert await _ask(af.models.get("openai/m", base_url=base, api_key="k"))
        assert proxy.forwarded == []
        clean_env.delenv("NO_PROXY")  # loopback is not exempt by itself, as with curl and httpx
        assert await _ask(af.models.get("openai/m", base_url=base, api_key="k"))
        assert len(proxy.forwarded) == 1


async def test_an_explicit_proxy_option_without_any_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    async with provider_and_proxy() as (server, proxy):
        port = server.base_url.rsplit(":", 1)[1].split("/")[0]  # type: ignore[attr-defined]
        url = f"http://provider.test:{port}/v1"
        model = af.models.get("openai/m", base_url=url, api_key="k", proxy=proxy.url)
        assert await _ask(model) and len(proxy.forwarded) == 1
        assert "proxy" not in model.config()  # the route is not part of the cache key


async def test_httpx_transport_and_a_sweep_honour_the_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with provider_and_proxy() as (server, proxy):
        port = server.base_url.rsplit(":", 1)[1].split("/")[0]  # type: ignore[attr-defined]
        url = f"http://provider.test:{port}/v1"
        clean_env.setenv("HTTP_PROXY", proxy.url)
        async with make_async_client(transport="httpx") as client:
            reply = await client.post(f"{url}/chat/completions", json={"model": "m"})
        assert reply.status_code == 200 and len(proxy.forwarded) == 1
        design = af.Perturbation("helpful_only", vary={"tier": ["free", "paid"]})
        model = af.models.get("openai/m", base_url=url, api_key="k")
        res = await design.sweep_async(
            model, requests=af.datasets.synthetic(2), store=str(tmp_path / "s.sqlite"),
            progress=False,
        )  # fmt: skip
        await model.aclose()
        assert {t.status for t in res.trials()} == {"completed"}
        assert len(proxy.forwarded) == 1 + 4


async def test_dataset_downloads_go_through_the_proxy(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with ForwardProxy() as proxy:
        clean_env.setenv("HTTP_PROXY", proxy.url)
        clean_env.setattr(datasets, "ADVBENCH_URL", "http://data.test/advbench.csv")
        rows = await asyncio.to_thread(datasets.advbench, cache_dir=tmp_path)
    assert [r.text for r in rows] == ["Say something kind"]
    assert proxy.forwarded == ["GET http://data.test/advbench.csv"]


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "p:3128"}, "http://p:3128"),
        ("https://api.openai.com/v1", {"https_proxy": "http://a", "HTTPS_PROXY": "http://b"},
         "http://a"),
        ("http://api.x/v1", {"HTTPS_PROXY": "http://p"}, None),
        ("http://api.x/v1", {"ALL_PROXY": "http://p"}, "http://p"),
        ("https://api.x/v1", {"ALL_PROXY": "http://p", "NO_PROXY": "*"}, None),
        ("https://eu.api.x/v1", {"ALL_PROXY": "http://p", "NO_PROXY": ".api.x"}, None),
        ("https://api.x/v1", {"ALL_PROXY": "http://p", "NO_PROXY": "api.x"}, None),
        ("https://notapi.x/v1", {"ALL_PROXY": "http://p", "NO_PROXY": "api.x"}, "http://p"),
        ("http://10.1.2.3:8000/v1", {"ALL_PROXY": "http://p", "NO_PROXY": "10.0.0.0/8"}, None),
        ("http://h:8000/v1", {"ALL_PROXY": "http://p", "NO_PROXY": "h:9000"}, "http://p"),
        ("http://h:8000/v1", {"ALL_PROXY": "http://p", "NO_PROXY": "h:8000"}, None),
    ],
)  # fmt: skip
def test_proxy_for_reads_the_variables_as_curl_does(
    url: str, env: dict[str, str], expected: str | None
) -> None:
    assert proxy_for(url, env) == expected
