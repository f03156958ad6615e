"""A fast loopback server speaking the OpenAI and Anthropic protocols, for benchmarks and tests.

Why not aiohttp.web: at 1,024 requests in flight and 100 ms latency the server must answer
~10,000 requests/s on one core of a 2-core machine, while the client under test has the other.
A framework costs ~100 µs per request there, which would make the *server* the bottleneck. So
this is a raw :class:`asyncio.Protocol` with a minimal HTTP/1.1 parser (Content-Length bodies,
keep-alive, one request at a time per connection) and pre-encoded replies; latency is a
``loop.call_later`` (the timer behind ``asyncio.sleep``, without a task per request).

Endpoints (any prefix, so ``base_url`` may or may not end in ``/v1``):

- ``POST .../chat/completions``  OpenAI chat; honours ``"n"`` (several choices)
- ``POST .../completions``       OpenAI legacy completions (base models)
- ``POST .../messages``          Anthropic messages
- ``GET /stats``                 JSON counters: requests, by path, by fault, server CPU seconds
- ``POST /reset``                zero the counters

Fault injection, first match wins: the request header ``x-loopback-fault: NAME``; then a
scripted queue (:meth:`LoopbackServer.script`); then random rates (``--fault 429=0.05``). Faults:

- ``429``        HTTP 429 with ``retry-after`` (seconds) and ``retry-after-ms`` headers
- ``500``        HTTP 500 with an OpenAI-style error body
- ``malformed``  HTTP 200 whose body is not JSON
- ``missing``    HTTP 200 JSON without ``choices`` / ``content``
- ``hang``       never answer (until the client gives up or the server closes)
- ``close``      drop the connection without answering
- ``truncated``  a normal reply whose text has no ``</OUTPUT>`` (exercises ``<NEXT/>``)

With ``rpm`` set the server also enforces a requests-per-minute limit (token bucket; 429 with
``retry-after-ms`` when empty) and sends ``x-ratelimit-*`` headers on every reply.

Run it as its own process (the benchmark does) and it prints its port on the first line::

    python benchmarks/loopback_server.py --port 0 --latency 0.1

Tests can run it in their own event loop (``async with LoopbackServer(...) as server``) or as
a subprocess (``with spawn(latency=0.1) as proc: proc.port``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULTS = ("429", "500", "malformed", "missing", "hang", "close", "truncated")

DEFAULT_REPLY = (
    "<SCRATCHPAD_REASONING>The user asks for something. I will think about it briefly and then "
    "answer helpfully.</SCRATCHPAD_REASONING>\n"
    "<OUTPUT><request_fully_accepted/> Here is a short, benign answer from the loopback server."
    "</OUTPUT>"
)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    411: "Length Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def _truncate(reply: str) -> str:
    """The reply cut before its closing ``</OUTPUT>`` (a reply that needs ``<NEXT/>``)."""
    head, sep, _ = reply.partition("</OUTPUT>")
    return head if sep else reply[: max(1, len(reply) // 2)]


def _chat_body(text: str, n: int, seq: int) -> bytes:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        for i in range(n)
    ]
    return json.dumps(
        {
            "id": f"chatcmpl-loop{seq}",
            "object": "chat.completion",
            "created": 0,
            "model": "loopback",
            "choices": choices,
            "usage": {
                "prompt_tokens": 50,
                "completion_tokens": 40 * n,
                "total_tokens": 50 + 40 * n,
            },
        },
        separators=(",", ":"),
    ).encode()


def _completions_body(text: str, n: int, seq: int) -> bytes:
    choices = [{"index": i, "text": text, "finish_reason": "stop"} for i in range(n)]
    return json.dumps(
        {
            "id": f"cmpl-loop{seq}",
            "object": "text_completion",
            "created": 0,
            "model": "loopback",
            "choices": choices,
            "usage": {
                "prompt_tokens": 50,
                "completion_tokens": 40 * n,
                "total_tokens": 50 + 40 * n,
            },
        },
        separators=(",", ":"),
    ).encode()


def _messages_body(text: str, n: int, seq: int) -> bytes:
    del n  # the Messages API has no n
    return json.dumps(
        {
            "id": f"msg_loop{seq}",
            "type": "message",
            "role": "assistant",
            "model": "loopback",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 50, "output_tokens": 40},
        },
        separators=(",", ":"),
    ).encode()


_BODIES = {
    "chat": _chat_body,
    "completions": _completions_body,
    "messages": _messages_body,
}


def _endpoint(path: str) -> str | None:
    """Which protocol a request path speaks (query strings ignored)."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/completions"):
        return "completions"
    if path.endswith("/messages"):
        return "messages"
    return None


@dataclass
class _Bucket:
    """Requests-per-minute token bucket (the server-side rate limit)."""

    rpm: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        # Burst capacity: one second's worth of requests (at least one).
        self.tokens = max(1.0, self.rpm / 60.0)

    def take(self) -> float:
        """Take one token; return 0.0 on success, else seconds until one is available."""
        now = time.monotonic()
        rate = self.rpm / 60.0
        self.tokens = min(max(1.0, rate), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


class LoopbackServer:
    """An OpenAI/Anthropic-compatible HTTP server on 127.0.0.1 inside the current event loop.

    Args:
        host: Interface to bind.
        port: Port (0 picks a free one; read :attr:`port` after :meth:`start`).
        latency: Seconds before each reply (models the provider's generation time).
        faults: Fault name → probability, applied at random (seeded) to requests.
        seed: Seed of the fault RNG.
        retry_after: Seconds sent in ``retry-after`` (and ``retry-after-ms``) with a 429.
        rpm: Enforce this many requests per minute (None: no limit).
        reply: The assistant text every reply carries.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        faults: Mapping[str, float] | None = None,
        seed: int = 0,
        retry_after: float = 0.05,
        rpm: float | None = None,
        reply: str = DEFAULT_REPLY,
    ) -> None:
        for name in faults or {}:
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; valid faults: {', '.join(FAULTS)}")
        self.host = host
        self.port = port
        self.latency = latency
        self.faults = dict(faults or {})
        self.retry_after = retry_after
        self.reply = reply
        self._rng = random.Random(seed)
        self._script: deque[str | None] = deque()
        self._bucket = _Bucket(rpm) if rpm else None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_fault: Counter[str] = Counter()
        self.max_in_flight = 0
        self.in_flight = 0
        self._cache: dict[tuple[str, int, bool], bytes] = {}

    async def start(self) -> int:
        """Bind and start serving; return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening and drop every open connection (hanging requests included)."""
        if self._server is not None:
            self._server.close()
            for conn in list(self._connections):
                conn.abort()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, what an OpenAI-compatible backend's base_url wants."""
        return f"http://{self.host}:{self.port}/v1"

    def script(self, faults: Iterable[str | None]) -> None:
        """Queue faults for the next requests, in order (None: answer normally)."""
        for name in faults:
            if name is not None and name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; valid faults: {', '.join(FAULTS)}")
            self._script.append(name)

    def stats(self) -> dict[str, Any]:
        """Counters since start (or the last reset), and this process's CPU seconds."""
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_fault": dict(self.by_fault),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "cpu_s": time.process_time(),
        }

    def reset(self) -> None:
        """Zero the counters (not the fault script)."""
        self.requests = 0
        self.by_path.clear()
        self.by_fault.clear()
        self.max_in_flight = self.in_flight

    # -- request handling (called by _Connection) -------------------------------------------

    def choose_fault(self, header: str | None) -> str | None:
        """The fault for one request: header, then script, then random rates."""
        if header:
            return header if header in FAULTS else None
        if self._script:
            return self._script.popleft()
        for name, rate in self.faults.items():
            if rate > 0 and self._rng.random() < rate:
                return name
        return None

    def body_for(self, kind: str, n: int, truncated: bool, seq: int) -> bytes:
        """The JSON reply for one request (cached when it does not depend on ``seq``)."""
        key = (kind, n, truncated)
        body = self._cache.get(key)
        if body is None:
            text = _truncate(self.reply) if truncated else self.reply
            body = _BODIES[kind](text, n, 0)
            self._cache[key] = body
        return body

    def rate_headers(self) -> tuple[bytes, float]:
        """``x-ratelimit-*`` headers and the wait before a token is free (0.0 when admitted)."""
        if self._bucket is None:
            return b"", 0.0
        wait = self._bucket.take()
        limit = int(self._bucket.rpm)
        remaining = max(0, int(self._bucket.tokens))
        headers = (
            f"x-ratelimit-limit-requests: {limit}\r\n"
            f"x-ratelimit-remaining-requests: {remaining}\r\n"
            f"x-ratelimit-reset-requests: {max(wait, 0.001):.3f}s\r\n"
        ).encode()
        return headers, wait


_HEADER_END = b"\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered one at a time."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.busy:
            self.busy = False
            self.server.in_flight -= 1
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._parse()

    def _parse(self) -> None:
        end = self.buffer.find(_HEADER_END)
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        lines = head.split(b"\r\n")
        try:
            method, target, _version = lines[0].decode("latin-1").split(" ", 2)
        except ValueError:
            self._write(400, b'{"error":"bad request line"}', b"")
            self.keep_alive = False
            return
        length = 0
        fault_header: str | None = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"x-loopback-fault":
                fault_header = value.strip().decode("latin-1")
            elif lname == b"transfer-encoding":
                self._write(411, b'{"error":"send Content-Length"}', b"")
                self.keep_alive = False
                return
            elif lname == b"connection" and value.strip().lower() == b"close":
                self.keep_alive = False
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self._handle(method, target, body, fault_header)

    def _handle(self, method: str, target: str, body: bytes, fault_header: str | None) -> None:
        server = self.server
        path = target.split("?", 1)[0]
        if method == "GET" and path == "/stats":
            self._write(200, json.dumps(server.stats()).encode(), b"")
            return
        if method == "POST" and path == "/reset":
            server.reset()
            self._write(200, b"{}", b"")
            return
        kind = _endpoint(path) if method == "POST" else None
        if kind is None:
            self._write(404, b'{"error":{"message":"not found"}}', b"")
            return
        server.requests += 1
        server.by_path[kind] += 1
        seq = server.requests
        fault = server.choose_fault(fault_header)
        rate_headers, wait = server.rate_headers()
        if fault is None and wait > 0:
            fault = "429"
            retry = wait
        else:
            retry = server.retry_after
        if fault is not None:
            server.by_fault[fault] += 1
        n = 1
        if fault is None and b'"n"' in body:
            try:
                n = int(json.loads(body).get("n") or 1)
            except (ValueError, TypeError, AttributeError):
                n = 1
        extra = rate_headers + f"x-request-id: req-{seq}\r\n".encode()
        self.busy = True
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        if fault == "hang":
            return
        if fault == "close":
            self._finish()
            if self.transport is not None:
                self.transport.close()
            return
        if fault == "429":
            extra += (
                f"retry-after: {max(1, round(retry))}\r\nretry-after-ms: {int(retry * 1000)}\r\n"
            ).encode()
            self._later(429, b'{"error":{"message":"rate limited","type":"rate_limit"}}', extra)
        elif fault == "500":
            self._later(500, b'{"error":{"message":"server error","type":"server"}}', extra)
        elif fault == "malformed":
            self._later(200, b'{"id": "broken", "choices": [', extra)
        elif fault == "missing":
            self._later(200, b'{"id":"x","object":"chat.completion","usage":{}}', extra)
        else:
            payload = server.body_for(kind, n, fault == "truncated", seq)
            self._later(200, payload, extra)

    def _later(self, status: int, payload: bytes, extra: bytes) -> None:
        latency = self.server.latency
        if latency > 0:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(latency, self._reply, status, payload, extra)
        else:
            self._reply(status, payload, extra)

    def _reply(self, status: int, payload: bytes, extra: bytes) -> None:
        self.timer = None
        self._finish()
        self._write(status, payload, extra)
        if self.buffer and self.transport is not None:
            self._parse()

    def _finish(self) -> None:
        if self.busy:
            self.busy = False
            self.server.in_flight -= 1

    def _write(self, status: int, payload: bytes, extra: bytes) -> None:
        if self.transport is None:
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        ).encode()
        if not self.keep_alive:
            head += b"connection: close\r\n"
        self.transport.write(head + extra + b"\r\n" + payload)
        if not self.keep_alive:
            self.transport.close()


# -- running it as a separate process ---------------------------------------------------------


@dataclass
class ServerProcess:
    """A loopback server running in a child process (see :func:`spawn`)."""

    process: subprocess.Popen[str]
    port: int
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def _call(self, method: str, path: str) -> dict[str, Any]:
        req = urllib.request.Request(f"http://{self.host}:{self.port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def stats(self) -> dict[str, Any]:
        """The server's counters and CPU seconds."""
        return self._call("GET", "/stats")

    def reset(self) -> None:
        """Zero the server's counters."""
        self._call("POST", "/reset")

    def stop(self) -> None:
        """Terminate the child and wait for it (bounded)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def spawn(
    *,
    latency: float = 0.0,
    faults: Mapping[str, float] | None = None,
    seed: int = 0,
    retry_after: float = 0.05,
    rpm: float | None = None,
    uvloop: bool = True,
) -> Iterator[ServerProcess]:
    """Run the server in its own process for the duration of a ``with`` block."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--port",
        "0",
        "--latency",
        str(latency),
        "--seed",
        str(seed),
        "--retry-after",
        str(retry_after),
    ]
    for name, rate in (faults or {}).items():
        cmd += ["--fault", f"{name}={rate}"]
    if rpm:
        cmd += ["--rpm", str(rpm)]
    if not uvloop:
        cmd.append("--no-uvloop")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"loopback server did not start (printed {line!r})")
        handle = ServerProcess(proc, int(line))
        yield handle
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


def _parse_fault(text: str) -> tuple[str, float]:
    name, sep, rate = text.partition("=")
    if not sep or name not in FAULTS:
        raise argparse.ArgumentTypeError(
            f"fault must be NAME=RATE with NAME one of {', '.join(FAULTS)}; got {text!r}"
        )
    return name, float(rate)


async def _serve(args: argparse.Namespace) -> None:
    server = LoopbackServer(
        args.host,
        args.port,
        latency=args.latency,
        faults=dict(args.fault),
        seed=args.seed,
        retry_after=args.retry_after,
        rpm=args.rpm,
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
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per reply")
    parser.add_argument(
        "--fault",
        type=_parse_fault,
        action="append",
        default=[],
        help="NAME=RATE, repeatable; NAME in " + ", ".join(FAULTS),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=0.05, help="seconds, sent with 429")
    parser.add_argument("--rpm", type=float, default=None, help="enforce a requests/min limit")
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
