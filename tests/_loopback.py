"""A loopback OpenAI-compatible chat server with fault injection, for end-to-end tests.

Plain asyncio (HTTP/1.1 keep-alive, Content-Length bodies): no extra dependency. Faults are
drawn per request from a seeded RNG: 429 with ``retry-after-ms``, 500, malformed bodies and
hangs. Every request is counted, successes per distinct prompt too, so tests can prove that
nothing was duplicated. Run it on the test's loop (``await server.start()``) or on its own
thread (``with server.in_thread(): ...``) when the client is another process.

The reply is a function of the prompt: it accepts when the system prompt says ``tier=free``,
rejects otherwise; a request text containing ``[split]`` gets its answer in two turns (the first
without ``</OUTPUT>``), to exercise the ``<NEXT/>`` continuation over HTTP.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType


def _load_benchmark(name: str, file: str) -> ModuleType:
    """``benchmarks/<file>`` by path (benchmarks/ is not a package), once per test session."""
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parent.parent / "benchmarks" / file
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_benchmark_server() -> ModuleType:
    """benchmarks/loopback_server.py: rate limits, fault kinds, a subprocess mode."""
    return _load_benchmark("afperturb_bench_loopback", "loopback_server.py")


def load_caching_server() -> ModuleType:
    """benchmarks/caching_server.py: the providers' prompt-caching rules and a bill."""
    return _load_benchmark("afperturb_bench_caching", "caching_server.py")


FIRST = "<SCRATCHPAD_REASONING>thinking</SCRATCHPAD_REASONING><OUTPUT>"
ACCEPT = FIRST + "<request_fully_accepted/> here it is</OUTPUT>"
REJECT = FIRST + "<rejected/></OUTPUT>"


@dataclass
class Faults:
    """Per-request fault probabilities (drawn in this order) and their parameters."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_malformed: float = 0.0
    rate_hang: float = 0.0
    retry_after_ms: int = 20
    hang_s: float = 30.0
    latency_s: float = 0.0


@dataclass
class LoopbackServer:
    """The server; ``port`` is chosen by the OS on start."""

    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)
    auth_headers: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL clients pass as ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()

    @contextmanager
    def in_thread(self) -> Iterator[LoopbackServer]:
        """Serve from a background thread with its own loop (for subprocess clients)."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, extra, payload = await self._respond(headers, body)
                reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error"}
                out = [f"HTTP/1.1 {status} {reason.get(status, 'X')}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                out += [f"content-length: {len(payload)}", "content-type: application/json"]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _draw(self) -> str:
        f = self.faults
        with self._lock:
            self.requests += 1
            u = self._rng.random()
        for kind, rate in (
            ("429", f.rate_429),
            ("500", f.rate_500),
            ("malformed", f.rate_malformed),
            ("hang", f.rate_hang),
        ):
            if u < rate:
                return kind
            u -= rate
        return "ok"

    async def _respond(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if "authorization" in headers:
            self.auth_headers.append(headers["authorization"])
        kind = self._draw()
        self.outcomes[kind] += 1
        if self.faults.latency_s:
            await asyncio.sleep(self.faults.latency_s)
        if kind == "429":
            return (
                429,
                {"retry-after-ms": str(self.faults.retry_after_ms)},
                b'{"error": "slow down"}',
            )
        if kind == "500":
            return 500, {}, b'{"error": "boom"}'
        if kind == "malformed":
            return 200, {}, b'{"choices": [{"mess'
        if kind == "hang":
            await asyncio.sleep(self.faults.hang_s)
        request = json.loads(body)
        messages = request["messages"]
        text = self.reply(messages)
        prompt = json.dumps(messages, sort_keys=True)
        self.served[prompt] += 1
        data = {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "model": request.get("model", "x"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4},
        }
        return 200, {"x-request-id": f"req-{self.requests}"}, json.dumps(data).encode()

    @staticmethod
    def reply(messages: list[dict[str, str]]) -> str:
        system = messages[0]["content"] if messages else ""
        full = ACCEPT if "tier=free" in system else REJECT
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        if "[split]" in user:
            if messages[-1]["content"] == "<NEXT/>":
                return full[len(FIRST) :]
            return FIRST
        return full
