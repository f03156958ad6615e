"""A loopback server that simulates the providers' prompt-caching rules, and bills for them.

It answers like Anthropic's Messages API and OpenAI's Chat Completions, but what it models is
the *usage* a real provider would report for a sequence of prompts: which tokens were read from
the prompt cache, which were written to it, which were plain input. A client (or a benchmark)
can then check that its prompt layout earns the cache hits it expects, and what a run would cost
(:meth:`CachingServer.bill_usd`), without a key or the internet.

Tokens. Every count is ``count_tokens(text) = len(text) // 4`` (characters, not bytes). A
client must learn counts only from the reported usage, never by recomputing this rule.

- Anthropic: the prompt is a sequence of blocks (each tool definition, then each system block,
  then each message content block; a string ``system`` or ``content`` is one text block). A
  text block counts ``count_tokens(block["text"])``; any other block (a tool, an image, a
  tool result) counts ``count_tokens`` of its canonical JSON. The prompt's count is the sum over
  blocks; roles and message framing are free.
- OpenAI: the prompt is one string, the canonical JSON (sorted keys, no spaces) of ``tools``
  (when present) followed by that of ``messages``; it counts ``count_tokens(prompt)``, and its
  first ``k`` tokens are its first ``4 k`` characters.

Anthropic (``POST .../messages``), the documented rules: a ``cache_control`` on a block (``{"type":
"ephemeral"}``, optionally ``"ttl": "1h"``) is a breakpoint; the prefix up to and including
that block is cacheable if it has at least ``min_tokens`` tokens (1,024; 2,048 for a model
whose name contains "haiku"). At most 4 breakpoints, and a 1 h breakpoint may not follow a 5 min
one (both are HTTP 400, as at Anthropic). On a request the server looks for the longest prefix
whose digest (sha256 over the model and the canonical JSON of the prefix's blocks, without their
``cache_control``) is cached and not expired, at each breakpoint and at the ``lookback`` (20)
block boundaries before it: that many tokens are a cache read. Every breakpoint beyond it that
meets the minimum is written: the tokens between the read prefix and the last such breakpoint
are cache writes (each segment at the TTL of the breakpoint that ends it). The rest is plain
input. Entries live 5 minutes (1 h with ``"ttl": "1h"``); a hit refreshes them.

OpenAI (``POST .../chat/completions``), automatic caching: prefixes of at least 1,024 tokens,
then every 128 tokens, are cached under (model, ``prompt_cache_key``); ``cached_tokens`` is the
longest live one. Entries live ``openai_ttl`` seconds (300) after their last use
(``"prompt_cache_retention": "24h"`` in a request: 24 h).

Timing, as at the providers: the lookup happens when the request arrives, the writes (and
refreshes, and the bill) when the reply is sent, after ``latency``. So identical requests sent
together all miss and all pay the write; a request whose client hangs up before the reply is
neither stored nor billed.

Simplified relative to the providers (on purpose: the server must be deterministic):

- caching is exact and never best-effort: no routing to a machine without the prefix, no
  eviction under load, no per-prefix rate overflow (OpenAI's ~15 requests/min per key);
- OpenAI's ``prompt_cache_key`` partitions the cache strictly (a key shares only with the same
  key; requests without a key share one default bucket, which no keyed request sees), where
  OpenAI only uses it as a routing hint;
- Anthropic: changing ``tool_choice``, images or thinking settings does not invalidate anything;
  a hit refreshes the entry read and the live entries of shorter prefixes looked at in the same
  request, each with its own TTL; tokens of the reply are not cacheable;
- OpenAI: only ``tools`` and ``messages`` make the prompt (not ``response_format`` etc.);
- model names are opaque strings (no list of models, no per-model minimum beyond "haiku").

Other endpoints (any prefix, so ``/stats`` and ``/v1/stats`` both work): ``GET /stats`` (the
bill's totals per provider, as JSON), ``POST /reset`` (zero the totals), ``POST /clear_cache``
(forget every entry). In-process::

    async with CachingServer(latency=0.01) as server:
        ...  # point a client at server.base_url
        server.bill_usd({"anthropic": {"input": 3.0, "output": 15.0}})

or as its own process (prints its port on the first line)::

    python benchmarks/caching_server.py --port 0 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any


def _load_loopback() -> ModuleType:
    """benchmarks/loopback_server.py, by path (benchmarks/ is not a package), under the name the
    tests' loader uses so that both share one module."""
    name = "afperturb_bench_loopback"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().with_name("loopback_server.py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_lb = _load_loopback()

DEFAULT_REPLY = "<OUTPUT><rejected/></OUTPUT>"

#: Seconds an entry lives after its last use.
ANTHROPIC_TTLS = {"5m": 300.0, "1h": 3600.0}
OPENAI_TTL = 300.0
OPENAI_EXTENDED_TTL = 24 * 3600.0

#: Price multipliers on the input price (Anthropic's published ones; OpenAI's default fraction).
ANTHROPIC_WRITE_5M = 1.25
ANTHROPIC_WRITE_1H = 2.0
ANTHROPIC_READ = 0.1
OPENAI_CACHED_FRACTION = 0.5

MAX_BREAKPOINTS = 4
PROVIDERS = ("anthropic", "openai")


def count_tokens(text: str) -> int:
    """The server's token count of a text: ``len(text) // 4``."""
    return len(text) // 4


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _BadRequest(Exception):
    """A request the provider would refuse with HTTP 400."""


@dataclass
class Totals:
    """What one provider has billed since the start (or the last :meth:`CachingServer.reset`).

    ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written with the 1 h TTL.
    OpenAI never bills a write: its ``cache_write_tokens`` stay 0.
    """

    requests: int = 0
    input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0

    def add(self, other: Totals) -> None:
        """Add another request's counts to these."""
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cache_write_1h_tokens += other.cache_write_1h_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.output_tokens += other.output_tokens


@dataclass
class _Entry:
    expires: float
    ttl: float


# -- Anthropic --------------------------------------------------------------------------------


def _ttl_of(block: Mapping[str, Any]) -> str | None:
    """The breakpoint TTL of a block ("5m" / "1h"), None when it carries no ``cache_control``."""
    control = block.get("cache_control")
    if control is None:
        return None
    if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
        raise _BadRequest('cache_control must be {"type": "ephemeral"}')
    ttl = control.get("ttl", "5m")
    if ttl not in ANTHROPIC_TTLS:
        raise _BadRequest(f"cache_control.ttl must be '5m' or '1h', got {ttl!r}")
    return str(ttl)


def _anthropic_blocks(request: Mapping[str, Any]) -> list[tuple[str, int, str | None]]:
    """The prompt as (canonical JSON, tokens, breakpoint TTL) per block: tools, system, messages."""
    out: list[tuple[str, int, str | None]] = []

    def add(where: list[Any], block: Any) -> None:
        if isinstance(block, str):
            block = {"type": "text", "text": block}
        if not isinstance(block, Mapping):
            raise _BadRequest("a content block must be an object or a string")
        ttl = _ttl_of(block)
        bare = {k: v for k, v in block.items() if k != "cache_control"}
        canon = _canonical([*where, bare])
        text = bare.get("text")
        tokens = count_tokens(text) if isinstance(text, str) else count_tokens(_canonical(bare))
        out.append((canon, tokens, ttl))

    for tool in request.get("tools") or []:
        add(["tools"], tool)
    system = request.get("system")
    if isinstance(system, str):
        add(["system"], system)
    elif isinstance(system, list):
        for block in system:
            add(["system"], block)
    elif system is not None:
        raise _BadRequest("system must be a string or a list of content blocks")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages: a non-empty list is required")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise _BadRequest(f"messages.{i}: role must be 'user' or 'assistant'")
        content = message.get("content")
        where = ["messages", i, message["role"]]
        if isinstance(content, str):
            add(where, content)
        elif isinstance(content, list):
            for block in content:
                add(where, block)
        else:
            raise _BadRequest(f"messages.{i}.content must be a string or a list of blocks")
    return out


# -- the server -------------------------------------------------------------------------------


class CachingServer:
    """An Anthropic/OpenAI-compatible HTTP server on 127.0.0.1 that simulates prompt caching.

    Args:
        host: Interface to bind.
        port: Port (0 picks a free one; read :attr:`port` after :meth:`start`).
        latency: Seconds before each reply; the cache writes happen when the reply is sent.
        reply: The assistant text of every reply (its tokens are the output tokens, capped at
            the request's ``max_tokens``).
        clock: Seconds, monotonic; entries expire by it (tests pass a fake one).
        min_tokens: Anthropic's minimum cacheable prefix, for models without "haiku" in the name.
        haiku_min_tokens: The minimum for models whose name contains "haiku".
        lookback: Block boundaries before each Anthropic breakpoint also checked for a hit
            (Anthropic documents about 20; 0 checks the breakpoints only).
        openai_min_tokens: OpenAI's minimum cached prefix.
        openai_increment: OpenAI caches prefixes in steps of this many tokens beyond the minimum.
        openai_ttl: Seconds an OpenAI entry lives after its last use (OpenAI says 5–10 minutes).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        reply: str = DEFAULT_REPLY,
        clock: Callable[[], float] = time.monotonic,
        min_tokens: int = 1024,
        haiku_min_tokens: int = 2048,
        lookback: int = 20,
        openai_min_tokens: int = 1024,
        openai_increment: int = 128,
        openai_ttl: float = OPENAI_TTL,
    ) -> None:
        if openai_increment < 1 or openai_min_tokens < 1:
            raise ValueError("openai_min_tokens and openai_increment must be at least 1")
        self.host = host
        self.port = port
        self.latency = latency
        self.reply = reply
        self.clock = clock
        self.min_tokens = min_tokens
        self.haiku_min_tokens = haiku_min_tokens
        self.lookback = lookback
        self.openai_min_tokens = openai_min_tokens
        self.openai_increment = openai_increment
        self.openai_ttl = openai_ttl
        self.totals: dict[str, Totals] = {p: Totals() for p in PROVIDERS}
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._cache: dict[bytes, _Entry] = {}
        self._commits = 0
        self._server: asyncio.Server | None = None
        self._connections: set[Any] = set()

    # -- lifecycle (as LoopbackServer) --------------------------------------------------------

    async def start(self) -> int:
        """Bind and start serving; return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _CachingConnection(self), self.host, self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening and drop every open connection (unanswered requests are not billed)."""
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> CachingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``; Anthropic clients post to ``{base_url}/messages``."""
        return f"http://{self.host}:{self.port}/v1"

    # -- the bill -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The totals per provider, the live cache entries, requests answered or pending."""
        now = self.clock()
        return {
            **{p: asdict(t) for p, t in self.totals.items()},
            "cache_entries": sum(1 for e in self._cache.values() if e.expires > now),
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    def reset(self) -> None:
        """Zero the totals (the cache stays: see :meth:`clear_cache`)."""
        self.totals = {p: Totals() for p in PROVIDERS}
        self.requests = 0
        self.max_in_flight = self.in_flight

    def clear_cache(self) -> None:
        """Forget every cache entry."""
        self._cache.clear()

    def bill_usd(
        self,
        prices: Mapping[str, Mapping[str, float]],
        *,
        openai_cached_fraction: float = OPENAI_CACHED_FRACTION,
        without_caching: bool = False,
    ) -> float:
        """What the totals cost, in USD.

        Args:
            prices: Per provider (``"anthropic"``, ``"openai"``), USD per million tokens:
                ``"input"`` and ``"output"``, optionally ``"cache_write"``,
                ``"cache_write_1h"``, ``"cache_read"`` to override the multipliers (Anthropic:
                writes 1.25 × input, 1 h writes 2 ×, reads 0.1 ×; OpenAI: cached tokens at
                ``openai_cached_fraction`` × input). A provider without traffic needs no prices.
            openai_cached_fraction: OpenAI's price of a cached token as a fraction of the input.
            without_caching: Price every prompt token as plain input (what the same traffic
                would cost with no cache), to compare.

        Raises:
            ValueError: A provider had traffic but ``prices`` has no entry for it.
        """
        total = 0.0
        for provider, t in self.totals.items():
            if t == Totals():
                continue
            if provider not in prices:
                raise ValueError(f"no prices for {provider!r}, which had traffic")
            price = prices[provider]
            inp = price["input"]
            if provider == "anthropic":
                write = price.get("cache_write", ANTHROPIC_WRITE_5M * inp)
                write_1h = price.get("cache_write_1h", ANTHROPIC_WRITE_1H * inp)
                read = price.get("cache_read", ANTHROPIC_READ * inp)
            else:
                write = write_1h = inp
                read = price.get("cache_read", openai_cached_fraction * inp)
            if without_caching:
                write = write_1h = read = inp
            total += (
                t.input_tokens * inp
                + (t.cache_write_tokens - t.cache_write_1h_tokens) * write
                + t.cache_write_1h_tokens * write_1h
                + t.cache_read_tokens * read
                + t.output_tokens * price["output"]
            ) / 1e6
        return total

    # -- the rules ----------------------------------------------------------------------------

    def min_tokens_for(self, model: str) -> int:
        """Anthropic's minimum cacheable prefix for a model."""
        return self.haiku_min_tokens if "haiku" in model.lower() else self.min_tokens

    def _alive(self, key: bytes, now: float) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._cache[key]
            return None
        return entry

    def _committed(self, provider: str, usage: Totals) -> None:
        self.totals[provider].add(usage)
        self._commits += 1
        if self._commits % 1024 == 0:  # drop expired entries now and then
            now = self.clock()
            for key in [k for k, e in self._cache.items() if e.expires <= now]:
                del self._cache[key]

    def _output(self, request: Mapping[str, Any], *names: str) -> tuple[str, int, bool]:
        """The reply text, its tokens, and whether ``max_tokens`` cut it."""
        text = self.reply
        tokens = count_tokens(text)
        for name in names:
            cap = request.get(name)
            if isinstance(cap, int) and not isinstance(cap, bool) and cap < tokens:
                return text[: 4 * max(cap, 0)], max(cap, 0), True
        return text, tokens, False

    def anthropic(self, request: Mapping[str, Any]) -> tuple[dict[str, Any], Callable[[], None]]:
        """The reply to a Messages request and the commit to run when it is sent."""
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("model: a string is required")
        if not isinstance(request.get("max_tokens"), int):
            raise _BadRequest("max_tokens: an integer is required")
        blocks = _anthropic_blocks(request)
        breakpoints = [i for i, (_, _, ttl) in enumerate(blocks) if ttl is not None]
        if len(breakpoints) > MAX_BREAKPOINTS:
            raise _BadRequest(
                f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                f"Found {len(breakpoints)}."
            )
        ttls = [blocks[i][2] for i in breakpoints]
        if any(a == "5m" and b == "1h" for a, b in itertools.pairwise(ttls)):
            raise _BadRequest("a ttl='1h' cache_control block may not come after a ttl='5m' one")

        digests: list[bytes] = []
        cumulative: list[int] = []
        running = hashlib.sha256(_canonical(["anthropic", model]).encode())
        count = 0
        for canon, tokens, _ in blocks:
            running.update(canon.encode() + b"\n")
            digests.append(running.copy().digest())
            count += tokens
            cumulative.append(count)
        total = count

        now = self.clock()
        looked = sorted(
            {j for b in breakpoints for j in range(max(0, b - self.lookback), b + 1)},
            reverse=True,
        )
        hit = next((j for j in looked if self._alive(digests[j], now) is not None), None)
        read = cumulative[hit] if hit is not None else 0
        minimum = self.min_tokens_for(model)
        writes = [b for b in breakpoints if (hit is None or b > hit) and cumulative[b] >= minimum]
        written = written_1h = 0
        previous = read
        for b in writes:
            segment = cumulative[b] - previous
            written += segment
            if blocks[b][2] == "1h":
                written_1h += segment
            previous = cumulative[b]
        text, output, cut = self._output(request, "max_tokens")
        usage = Totals(
            requests=1,
            input_tokens=total - read - written,
            cache_write_tokens=written,
            cache_write_1h_tokens=written_1h,
            cache_read_tokens=read,
            output_tokens=output,
        )
        refresh = [j for j in looked if hit is not None and j <= hit]

        def commit() -> None:
            at = self.clock()
            for j in refresh:
                entry = self._alive(digests[j], at)
                if entry is not None:
                    entry.expires = at + entry.ttl
            for b in writes:
                ttl = ANTHROPIC_TTLS[blocks[b][2] or "5m"]
                self._cache[digests[b]] = _Entry(at + ttl, ttl)
            self._committed("anthropic", usage)

        body = {
            "id": f"msg_cache{self.requests}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if cut else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": written - written_1h,
                    "ephemeral_1h_input_tokens": written_1h,
                },
                "output_tokens": output,
            },
        }
        return body, commit

    def openai(self, request: Mapping[str, Any]) -> tuple[dict[str, Any], Callable[[], None]]:
        """The reply to a Chat Completions request and the commit to run when it is sent."""
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("model: a string is required")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("messages: a non-empty list is required")
        tools = request.get("tools")
        prompt = (_canonical(tools) if tools else "") + _canonical(messages)
        tokens = count_tokens(prompt)
        key = request.get("prompt_cache_key")
        bucket = ["openai", model, key if isinstance(key, str) else None]
        retention = request.get("prompt_cache_retention")
        ttl = OPENAI_EXTENDED_TTL if retention == "24h" else self.openai_ttl

        running = hashlib.sha256(_canonical(bucket).encode())
        prefixes: list[tuple[int, bytes]] = []
        done = 0
        for length in range(self.openai_min_tokens, tokens + 1, self.openai_increment):
            running.update(prompt[4 * done : 4 * length].encode())
            done = length
            prefixes.append((length, running.copy().digest()))
        now = self.clock()
        cached = next(
            (n for n, digest in reversed(prefixes) if self._alive(digest, now) is not None), 0
        )
        n = request.get("n") or 1
        if not isinstance(n, int) or n < 1:
            raise _BadRequest("n must be a positive integer")
        text, output, cut = self._output(request, "max_completion_tokens", "max_tokens")
        usage = Totals(
            requests=1,
            input_tokens=tokens - cached,
            cache_read_tokens=cached,
            output_tokens=output * n,
        )

        def commit() -> None:
            at = self.clock()
            for _, digest in prefixes:  # stores new prefixes and refreshes the hit ones
                self._cache[digest] = _Entry(at + ttl, ttl)
            self._committed("openai", usage)

        body = {
            "id": f"chatcmpl-cache{self.requests}",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if cut else "stop",
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": tokens,
                "completion_tokens": output * n,
                "total_tokens": tokens + output * n,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }
        return body, commit

    def answer(self, kind: str, body: bytes) -> tuple[int, bytes, Callable[[], None] | None]:
        """Status, JSON payload and commit (None for an error) for one request body."""
        self.requests += 1
        try:
            try:
                request = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _BadRequest(f"the body is not JSON: {exc}") from None
            if not isinstance(request, dict):
                raise _BadRequest("the body must be a JSON object")
            if kind == "messages":
                reply, commit = self.anthropic(request)
            else:
                reply, commit = self.openai(request)
        except _BadRequest as exc:
            if kind == "messages":
                error: dict[str, Any] = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": str(exc)},
                }
            else:
                error = {
                    "error": {
                        "message": str(exc),
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            return 400, json.dumps(error).encode(), None
        return 200, json.dumps(reply, separators=(",", ":")).encode(), commit


class _CachingConnection(_lb._Connection):  # type: ignore[misc,name-defined,unused-ignore]
    """LoopbackServer's HTTP/1.1 connection, answering with :class:`CachingServer`'s rules."""

    def __init__(self, server: CachingServer) -> None:
        super().__init__(server)
        self.commit: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.commit = None  # never answered: neither stored nor billed
        super().connection_lost(exc)

    def _handle(self, method: str, target: str, body: bytes, fault_header: str | None) -> None:
        del fault_header  # no fault injection here
        server: CachingServer = self.server
        path = target.split("?", 1)[0].rstrip("/")
        if method == "GET" and path.endswith("/stats"):
            self._write(200, json.dumps(server.stats()).encode(), b"")
            return
        if method == "POST" and path.endswith("/reset"):
            server.reset()
            self._write(200, b"{}", b"")
            return
        if method == "POST" and path.endswith("/clear_cache"):
            server.clear_cache()
            self._write(200, b"{}", b"")
            return
        kind = _lb._endpoint(path) if method == "POST" else None
        if kind not in ("messages", "chat"):
            self._write(404, b'{"error":{"message":"not found"}}', b"")
            return
        status, payload, commit = server.answer(kind, body)
        self.commit = commit
        self.busy = True
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        self._later(status, payload, f"x-request-id: req-{server.requests}\r\n".encode())

    def _reply(self, status: int, payload: bytes, extra: bytes) -> None:
        commit, self.commit = self.commit, None
        if commit is not None:
            commit()
        super()._reply(status, payload, extra)


# -- running it as a separate process ---------------------------------------------------------


@contextlib.contextmanager
def spawn(*, latency: float = 0.0, openai_ttl: float = OPENAI_TTL) -> Iterator[Any]:
    """Run the server in its own process for a ``with`` block; yields loopback_server's
    ``ServerProcess`` (``port``, ``base_url``, ``stats()``, ``reset()``)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--port",
        "0",
        "--latency",
        str(latency),
        "--openai-ttl",
        str(openai_ttl),
        "--no-uvloop",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"caching server did not start (printed {line!r})")
        yield _lb.ServerProcess(proc, int(line))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def _serve(args: argparse.Namespace) -> None:
    server = CachingServer(
        args.host,
        args.port,
        latency=args.latency,
        reply=args.reply,
        min_tokens=args.min_tokens,
        haiku_min_tokens=args.haiku_min_tokens,
        lookback=args.lookback,
        openai_ttl=args.openai_ttl,
    )
    port = await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per reply")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="the assistant text")
    parser.add_argument("--min-tokens", type=int, default=1024, help="Anthropic minimum")
    parser.add_argument("--haiku-min-tokens", type=int, default=2048)
    parser.add_argument("--lookback", type=int, default=20, help="Anthropic block lookback")
    parser.add_argument("--openai-ttl", type=float, default=OPENAI_TTL, help="seconds")
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    args = parser.parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]  # optional
        except ImportError:
            pass
        else:
            uvloop.run(_serve(args))
            return
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
