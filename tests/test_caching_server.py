"""benchmarks/caching_server.py: the providers' prompt-caching rules, over loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from _loopback import load_caching_server

cs = load_caching_server()

SONNET = "claude-sonnet-4-5"
HAIKU = "claude-3-5-haiku-latest"
GPT = "gpt-4o-mini"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def text(tokens: int, fill: str = "a") -> str:
    """A text the server counts as exactly ``tokens`` tokens (len // 4)."""
    return fill * (4 * tokens)


def cached(body: str, ttl: str | None = None) -> dict[str, Any]:
    control: dict[str, str] = {"type": "ephemeral"}
    if ttl:
        control["ttl"] = ttl
    return {"type": "text", "text": body, "cache_control": control}


def messages_request(
    system: Any, user: str | list[dict[str, Any]], model: str = SONNET, **extra: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "system": system,
        "messages": [{"role": "user", "content": user}],
        **extra,
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(clock: FakeClock) -> AsyncIterator[Any]:
    async with cs.CachingServer(clock=clock) as srv:
        yield srv


@pytest.fixture
async def client(server: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5, trust_env=False) as c:
        yield c


async def anthropic(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/messages", json=request)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["type"] == "message"
    assert body["content"][0]["text"] == cs.DEFAULT_REPLY
    usage: dict[str, Any] = body["usage"]
    return usage


async def openai(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/chat/completions", json=request)
    assert resp.status_code == 200, resp.text
    usage: dict[str, Any] = resp.json()["usage"]
    return usage


def rwi(usage: dict[str, Any]) -> tuple[int, int, int]:
    """(cache read, cache write, plain input) of an Anthropic usage."""
    return (
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
        usage["input_tokens"],
    )


# -- Anthropic --------------------------------------------------------------------------------


async def test_one_breakpoint_writes_then_reads_the_prefix(client: httpx.AsyncClient) -> None:
    system = [cached(text(2000))]
    first = await anthropic(client, messages_request(system, text(10, "q")))
    assert rwi(first) == (0, 2000, 10)
    assert first["cache_creation"] == {
        "ephemeral_5m_input_tokens": 2000,
        "ephemeral_1h_input_tokens": 0,
    }
    assert first["output_tokens"] == len(cs.DEFAULT_REPLY) // 4
    second = await anthropic(client, messages_request(system, text(10, "q")))
    assert rwi(second) == (2000, 0, 10)
    # what follows the breakpoint may change: the prefix is still read
    other = await anthropic(client, messages_request(system, text(25, "z")))
    assert rwi(other) == (2000, 0, 25)
    # a changed prefix (or another model) misses and writes its own entry
    changed = await anthropic(client, messages_request([cached(text(2000, "b"))], "hi there!"))
    assert rwi(changed) == (0, 2000, 2)
    other_model = await anthropic(client, messages_request(system, "", model="claude-opus-4-1"))
    assert rwi(other_model) == (0, 2000, 0)


async def test_below_the_minimum_nothing_is_cached(client: httpx.AsyncClient) -> None:
    short = [cached(text(1023))]
    for _ in range(2):
        assert rwi(await anthropic(client, messages_request(short, text(5)))) == (0, 0, 1028)
    # exactly the minimum is enough
    edge = [cached(text(1024, "e"))]
    assert rwi(await anthropic(client, messages_request(edge, "")))[1] == 1024
    # haiku models need 2,048
    mid = [cached(text(1500, "h"))]
    for _ in range(2):
        assert rwi(await anthropic(client, messages_request(mid, "", model=HAIKU))) == (0, 0, 1500)
    assert rwi(await anthropic(client, messages_request(mid, "", model=SONNET))) == (0, 1500, 0)
    # no cache_control at all: plain input, however long
    plain = messages_request(text(5000, "p"), text(3))
    for _ in range(2):
        assert rwi(await anthropic(client, plain)) == (0, 0, 5003)


async def test_entries_expire_after_five_minutes_and_hits_refresh_them(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    request = messages_request([cached(text(1200))], "")
    assert rwi(await anthropic(client, request)) == (0, 1200, 0)
    clock.now += 299
    assert rwi(await anthropic(client, request)) == (1200, 0, 0)  # refreshed to +300 from here
    clock.now += 299
    assert rwi(await anthropic(client, request)) == (1200, 0, 0)
    clock.now += 300
    assert rwi(await anthropic(client, request)) == (0, 1200, 0)  # expired: written again


async def test_one_hour_ttl(client: httpx.AsyncClient, clock: FakeClock, server: Any) -> None:
    request = messages_request([cached(text(1500), ttl="1h")], "")
    first = await anthropic(client, request)
    assert first["cache_creation"]["ephemeral_1h_input_tokens"] == 1500
    clock.now += 3000
    assert rwi(await anthropic(client, request)) == (1500, 0, 0)
    clock.now += 3601
    assert rwi(await anthropic(client, request)) == (0, 1500, 0)
    totals = server.stats()["anthropic"]
    assert totals["cache_write_tokens"] == totals["cache_write_1h_tokens"] == 3000
    assert totals["cache_read_tokens"] == 1500


async def test_two_breakpoints(client: httpx.AsyncClient) -> None:
    system = [cached(text(1500, "s"))]

    def request(history: str, question: str) -> dict[str, Any]:
        return messages_request(system, [cached(history), {"type": "text", "text": question}])

    # both prefixes written: 1,500 + 600 tokens
    assert rwi(await anthropic(client, request(text(600, "h"), text(7)))) == (0, 2100, 7)
    assert rwi(await anthropic(client, request(text(600, "h"), text(9)))) == (2100, 0, 9)
    # a new history: the system prefix is read, the new history written
    assert rwi(await anthropic(client, request(text(800, "k"), text(9)))) == (1500, 800, 9)
    # a first breakpoint under the minimum: only the longer prefix is stored
    small = [cached(text(500, "m"))]
    again = messages_request(small, [cached(text(700, "n")), {"type": "text", "text": "x" * 8}])
    assert rwi(await anthropic(client, again)) == (0, 1200, 2)
    changed = messages_request(small, [cached(text(700, "o"))])
    assert rwi(await anthropic(client, changed)) == (0, 1200, 0)  # nothing at 500 to read


async def test_tools_come_first_in_the_prefix(client: httpx.AsyncClient) -> None:
    tool = {"name": "lookup", "description": text(1100, "t"), "input_schema": {"type": "object"}}
    marked = {**tool, "cache_control": {"type": "ephemeral"}}
    first = await anthropic(client, messages_request("sys", "", tools=[marked]))
    tokens = first["cache_creation_input_tokens"]
    assert tokens >= 1100 and first["input_tokens"] == 0
    # a new system prompt after the tools still reads the tools' prefix
    second = await anthropic(client, messages_request("another system", "", tools=[marked]))
    assert rwi(second) == (tokens, 0, len("another system") // 4)


async def test_lookback_finds_an_earlier_breakpoint(clock: FakeClock) -> None:
    turns = [text(1100, "a"), text(10, "b"), text(10, "c"), text(10, "d")]

    def conversation(n: int) -> dict[str, Any]:
        msgs: list[dict[str, Any]] = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": turn}
            for i, turn in enumerate(turns[:n])
        ]
        msgs[-1] = {**msgs[-1], "content": [cached(turns[n - 1])]}
        return {"model": SONNET, "max_tokens": 10, "messages": msgs}

    for lookback, expected in ((20, (1110, 20, 0)), (0, (0, 1130, 0))):
        async with (
            cs.CachingServer(clock=clock, lookback=lookback) as srv,
            httpx.AsyncClient(base_url=srv.base_url, trust_env=False) as c,
        ):
            assert rwi(await anthropic(c, conversation(2))) == (0, 1110, 0)
            # the breakpoint moved to the last turn: the entry two blocks back is found
            assert rwi(await anthropic(c, conversation(4))) == expected


async def test_anthropic_bad_requests(client: httpx.AsyncClient) -> None:
    five = [cached(f"block {i}") for i in range(5)]
    resp = await client.post("/messages", json=messages_request(five, "hi"))
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert "maximum of 4" in resp.json()["error"]["message"]
    order = [cached(text(10)), cached(text(10), ttl="1h")]
    assert (await client.post("/messages", json=messages_request(order, "hi"))).status_code == 400
    no_max = messages_request("s", "hi")
    del no_max["max_tokens"]
    assert (await client.post("/messages", json=no_max)).status_code == 400
    assert (await client.post("/messages", content=b"{not json")).status_code == 400
    assert (await client.get("/nowhere")).status_code == 404


async def test_max_tokens_caps_the_output(client: httpx.AsyncClient) -> None:
    resp = await client.post("/messages", json={**messages_request("s", "hi"), "max_tokens": 2})
    body = resp.json()
    assert body["usage"]["output_tokens"] == 2
    assert body["stop_reason"] == "max_tokens"
    assert body["content"][0]["text"] == cs.DEFAULT_REPLY[:8]


async def test_identical_requests_in_flight_together_all_write(clock: FakeClock) -> None:
    # the entry exists only once the first reply is sent, as at the providers
    request = messages_request([cached(text(1500))], "")
    async with (
        cs.CachingServer(clock=clock, latency=0.05) as srv,
        httpx.AsyncClient(base_url=srv.base_url, trust_env=False) as c,
    ):
        together = await asyncio.gather(*(anthropic(c, request) for _ in range(3)))
        assert [rwi(u) for u in together] == [(0, 1500, 0)] * 3
        assert rwi(await anthropic(c, request)) == (1500, 0, 0)
        assert srv.stats()["anthropic"]["cache_write_tokens"] == 4500


# -- OpenAI -----------------------------------------------------------------------------------


def chat(system: str, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": GPT,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        **extra,
    }


async def test_openai_cached_tokens_in_128_token_steps(client: httpx.AsyncClient) -> None:
    request = chat(text(1500, "s"), "first question")
    first = await openai(client, request)
    prompt = first["prompt_tokens"]
    assert prompt >= 1500
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    assert first["total_tokens"] == prompt + first["completion_tokens"]
    second = await openai(client, request)
    hit = second["prompt_tokens_details"]["cached_tokens"]
    assert hit >= 1024 and hit % 128 == 0
    assert 0 <= prompt - hit < 128
    assert hit == 1024 + (prompt - 1024) // 128 * 128
    # another question after the same system prompt: the shared prefix, rounded down
    other = await openai(client, chat(text(1500, "s"), "a different question"))
    got = other["prompt_tokens_details"]["cached_tokens"]
    assert got >= 1024 and got % 128 == 0
    assert 1500 - 128 < got <= 1500
    # under 1,024 tokens nothing is cached
    short = chat(text(900, "u"), "q")
    for _ in range(2):
        assert (await openai(client, short))["prompt_tokens_details"]["cached_tokens"] == 0


async def test_openai_prompt_cache_key_partitions_the_cache(client: httpx.AsyncClient) -> None:
    base = chat(text(1400, "k"), "q")

    async def hit(**extra: Any) -> int:
        usage = await openai(client, {**base, **extra})
        return int(usage["prompt_tokens_details"]["cached_tokens"])

    assert await hit(prompt_cache_key="a") == 0
    assert await hit(prompt_cache_key="b") == 0
    assert await hit(prompt_cache_key="a") > 0
    assert await hit() == 0  # no key: the default bucket, not key "a"'s
    assert await hit() > 0
    assert await hit(model="gpt-4.1") == 0  # another model


async def test_openai_entries_expire(client: httpx.AsyncClient, clock: FakeClock) -> None:
    request = chat(text(1300, "x"), "q")

    async def hit() -> int:
        return int((await openai(client, request))["prompt_tokens_details"]["cached_tokens"])

    assert await hit() == 0
    clock.now += 299
    assert await hit() > 0
    clock.now += 299  # the hit refreshed it
    assert await hit() > 0
    clock.now += 301
    assert await hit() == 0


# -- the bill ---------------------------------------------------------------------------------


PRICES = {
    "anthropic": {"input": 3.0, "output": 15.0},
    "openai": {"input": 2.0, "output": 8.0},
}


async def test_the_bill(client: httpx.AsyncClient, server: Any) -> None:
    out = len(cs.DEFAULT_REPLY) // 4
    await anthropic(client, messages_request([cached(text(2000))], text(100)))  # W 2000, in 100
    await anthropic(client, messages_request([cached(text(2000))], text(100)))  # R 2000, in 100
    await anthropic(client, messages_request([cached(text(1000, "h"), "1h")], ""))  # < min
    await anthropic(client, messages_request([cached(text(1200, "h"), "1h")], ""))  # W1h 1200
    o1 = await openai(client, chat(text(1300), "q"))
    o2 = await openai(client, chat(text(1300), "q"))
    prompt, hit = o1["prompt_tokens"], o2["prompt_tokens_details"]["cached_tokens"]
    assert hit > 0

    stats = (await client.get("/stats")).json()
    assert stats["anthropic"] == {
        "requests": 4,
        "input_tokens": 100 + 100 + 1000,
        "cache_write_tokens": 2000 + 1200,
        "cache_write_1h_tokens": 1200,
        "cache_read_tokens": 2000,
        "output_tokens": 4 * out,
    }
    assert stats["openai"] == {
        "requests": 2,
        "input_tokens": 2 * prompt - hit,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": hit,
        "output_tokens": 2 * out,
    }
    anthropic_usd = (1200 * 3.0 + 2000 * 3.75 + 1200 * 6.0 + 2000 * 0.3 + 4 * out * 15.0) / 1e6
    openai_usd = ((2 * prompt - hit) * 2.0 + hit * 1.0 + 2 * out * 8.0) / 1e6
    assert server.bill_usd(PRICES) == pytest.approx(anthropic_usd + openai_usd)
    assert server.bill_usd(PRICES, openai_cached_fraction=0.25) == pytest.approx(
        anthropic_usd + openai_usd - hit * 0.5 / 1e6
    )
    plain = ((1200 + 3200 + 2000) * 3.0 + 4 * out * 15.0 + 2 * prompt * 2.0 + 2 * out * 8.0) / 1e6
    assert server.bill_usd(PRICES, without_caching=True) == pytest.approx(plain)
    explicit = {**PRICES, "anthropic": {**PRICES["anthropic"], "cache_read": 0.0}}
    assert server.bill_usd(explicit) == pytest.approx(anthropic_usd + openai_usd - 2000 * 0.3 / 1e6)
    with pytest.raises(ValueError, match="openai"):
        server.bill_usd({"anthropic": PRICES["anthropic"]})

    assert (await client.post("/reset")).status_code == 200
    zero = (await client.get("/stats")).json()
    assert zero["anthropic"]["cache_read_tokens"] == zero["openai"]["input_tokens"] == 0
    assert server.bill_usd({}) == 0.0
    # the cache survives a reset of the bill; clear_cache forgets it
    assert rwi(await anthropic(client, messages_request([cached(text(2000))], ""))) == (2000, 0, 0)
    server.reset()
    server.clear_cache()
    assert rwi(await anthropic(client, messages_request([cached(text(2000))], ""))) == (0, 2000, 0)


def test_runs_as_its_own_process() -> None:
    with cs.spawn(latency=0.0) as proc:
        body = {"model": SONNET, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=proc.base_url, trust_env=False, timeout=5) as c:
            assert c.post("/messages", json=body).status_code == 200
        assert proc.stats()["anthropic"]["requests"] == 1
        proc.reset()
        assert proc.stats()["anthropic"]["requests"] == 0
