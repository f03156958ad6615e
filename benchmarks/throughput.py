"""Throughput of the HTTP paths a sweep can take, side by side, against one loopback server.

For each number of requests in flight (default 32, 128, 512, 1,024) and a server latency of
100 ms, each client runs in a fresh process of its own and sends ``rounds × concurrency``
requests through ``concurrency`` worker tasks (after a warm-up that opens the connections):

- ``aiohttp``        a bare aiohttp loop that only sends and parses (the ceiling on one core)
- ``httpx``          a plain ``httpx.AsyncClient`` with httpx's own transport
- ``httpx+aiohttp``  ``afperturb.models._transport.make_async_client()`` (httpx over aiohttp)
- ``backend``        ``af.models.get("openai/bench", client=...)`` .generate() per request
- ``engine``         the full sweep: ``Perturbation.sweep(af.models.get("openai/bench",
                     base_url=...), ...)`` with rendering, store writes and tag parsing
- ``engine-mp``      the same sweep with ``processes=N`` (``--processes``, default 2): N forked
                     shard workers sharing the store; their CPU is counted (reaped children)

Reported per case: trials/s, % of the ideal rate (concurrency / latency), the ratio to the bare
aiohttp loop *of the same run*, client CPU per request (``process_time`` of the client process
plus its reaped children), peak RSS, and the server's CPU per request (to show it was not the
bottleneck). A case that stalls is cut off after ``--max-seconds`` and reports what it finished.

    python benchmarks/throughput.py                       # the full table (a few minutes)
    python benchmarks/throughput.py --concurrency 512 --clients aiohttp,httpx+aiohttp
    python benchmarks/throughput.py --million             # 1e6 simulated trials: peak RSS

Other processes share the machine's cores: compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from loopback_server import spawn  # noqa: E402

CLIENTS = ("aiohttp", "httpx", "httpx+aiohttp", "backend", "engine", "engine-mp")
DEFAULT_CLIENTS = ("aiohttp", "httpx", "httpx+aiohttp", "backend", "engine", "engine-mp")


def _payload(body_bytes: int) -> dict[str, Any]:
    """An OpenAI chat request of about ``body_bytes`` bytes (system prompt + user turn)."""
    system = ("You are an AI assistant. " * (body_bytes // 25 + 1))[:body_bytes]
    return {
        "model": "bench",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Write a short poem about the sea."},
        ],
        "max_tokens": 512,
        "temperature": 1.0,
    }


# -- the client side (runs in a child process) ----------------------------------------------


async def _drive(
    send: Callable[[], Awaitable[str]], concurrency: int, total: int, max_seconds: float
) -> dict[str, float]:
    """Warm up (one request per worker), then time ``total`` requests over ``concurrency``."""
    failures = 0

    async def run(count: int, deadline: float) -> int:
        nonlocal failures
        left = count
        done = 0

        async def worker() -> None:
            nonlocal left, done, failures
            while left > 0 and time.monotonic() < deadline:
                left -= 1
                try:
                    text = await send()
                except Exception:
                    failures += 1
                    continue
                if "</OUTPUT>" not in text:
                    failures += 1
                done += 1

        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()) + 5)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return done

    await run(concurrency, time.monotonic() + max_seconds)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = await run(total, time.monotonic() + max_seconds)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    return {"done": done, "wall_s": wall, "cpu_s": cpu, "failures": failures}


def _client_aiohttp(url: str, concurrency: int, body: dict[str, Any]) -> tuple[Any, Any]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    )
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer x"}

    async def send() -> str:
        async with session.post(url, data=data, headers=headers) as resp:
            parsed = json.loads(await resp.read())
        return str(parsed["choices"][0]["message"]["content"])

    return send, session.close


def _client_httpx(url: str, concurrency: int, body: dict[str, Any], fast: bool) -> tuple[Any, Any]:
    import httpx

    if fast:
        from afperturb.models._transport import make_async_client

        client = make_async_client(concurrency=concurrency, timeout=120.0)
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(limits=limits, timeout=120.0)
    headers = {"authorization": "Bearer x"}

    async def send() -> str:
        resp = await client.post(url, json=body, headers=headers)
        return str(resp.json()["choices"][0]["message"]["content"])

    return send, client.aclose


def _client_backend(base_url: str, concurrency: int, body: dict[str, Any]) -> tuple[Any, Any]:
    import afperturb as af
    from afperturb.models._transport import make_async_client
    from afperturb.records import Message, SamplingParams

    client = make_async_client(concurrency=concurrency, timeout=120.0)
    model = af.models.get("openai/bench", base_url=base_url, api_key="x", client=client)
    messages = [Message(role=m["role"], content=m["content"]) for m in body["messages"]]
    params = SamplingParams(max_tokens=512, temperature=1.0)

    async def send() -> str:
        completion = await model.generate(messages, params)
        return str(completion.text)

    async def close() -> None:
        await model.aclose()
        await client.aclose()

    return send, close


async def _child_http(args: argparse.Namespace) -> dict[str, float]:
    body = _payload(args.body_bytes)
    url = args.base_url + "/chat/completions"
    if args.child == "aiohttp":
        send, close = _client_aiohttp(url, args.concurrency, body)
    elif args.child in ("httpx", "httpx+aiohttp"):
        send, close = _client_httpx(url, args.concurrency, body, args.child == "httpx+aiohttp")
    else:
        send, close = _client_backend(args.base_url, args.concurrency, body)
    try:
        return await _drive(send, args.concurrency, args.requests, args.max_seconds)
    finally:
        await close()


def _engine_parts() -> tuple[Any, Any, Any] | str:
    """(Perturbation class, datasets module, models module), or why the engine cannot run."""
    try:
        from afperturb import datasets, models
        from afperturb import sweep as _sweep  # noqa: F401 - the engine itself
        from afperturb.design import Perturbation
    except Exception as exc:
        return f"engine not importable yet ({type(exc).__name__}: {exc})"
    return Perturbation, datasets, models


def _design(perturbation_cls: Any, total: int, seed: int, datasets: Any) -> tuple[Any, Any]:
    """The paper preset and enough synthetic requests for about ``total`` trials."""
    perturbation = perturbation_cls.preset("paper")
    n_conditions = len(perturbation.conditions())
    n_requests = max(1, -(-total // n_conditions))
    return perturbation, datasets.synthetic(n_requests, seed=seed)


def _child_engine(args: argparse.Namespace) -> dict[str, Any]:
    parts = _engine_parts()
    if isinstance(parts, str):
        return {"skipped": True, "reason": parts}
    perturbation_cls, datasets, models = parts
    from afperturb.models._transport import make_async_client

    async def main(tmp: str) -> dict[str, Any]:
        client = make_async_client(concurrency=args.concurrency, timeout=120.0)
        model = models.get("openai/bench", base_url=args.base_url, api_key="x", client=client)
        options: dict[str, Any] = {
            "samples": 1,
            "seed": 0,
            "concurrency": args.concurrency,
            "progress": False,
        }
        if args.child == "engine-mp":  # N forked shard workers sharing the store (H11)
            options["processes"] = args.processes
        try:
            # Warm-up: opens the connections and imports everything (not timed).
            perturbation, warm = _design(perturbation_cls, args.concurrency, 1, datasets)
            await perturbation.sweep_async(
                model, warm, store=os.path.join(tmp, "warm.sqlite"), **options
            )
            perturbation, requests = _design(perturbation_cls, args.requests, 0, datasets)
            kids0 = _children_cpu_s()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = await perturbation.sweep_async(
                model, requests, store=os.path.join(tmp, "bench.sqlite"), **options
            )
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            kids = _children_cpu_s() - kids0  # the shard workers of engine-mp (reaped)
        finally:
            await model.aclose()
            await client.aclose()
        frame = result.to_frame()
        done = int((frame["status"] == "completed").sum())
        return {
            "done": done,
            "wall_s": wall,
            "cpu_s": cpu,
            "failures": len(frame) - done,
            "http_requests": None,
            "children_cpu_s": kids,
        }

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(main(tmp))


def _child_million(args: argparse.Namespace) -> dict[str, Any]:
    parts = _engine_parts()
    if isinstance(parts, str):
        return {"skipped": True, "reason": parts}
    perturbation_cls, datasets, models = parts
    perturbation, requests = _design(perturbation_cls, args.trials, 0, datasets)
    model = models.get("sim/opus-like")
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "million.sqlite")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = perturbation.sweep(
            model,
            requests=requests,
            samples=1,
            seed=0,
            store=store,
            concurrency=args.concurrency,
            progress=False,
        )
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rss_after_sweep = _peak_rss_mib()
        trials = len(result.to_frame())
        rss_after_frame = _peak_rss_mib()
        store_mib = os.path.getsize(store) / 2**20
    return {
        "trials": trials,
        "conditions": len(perturbation.conditions()),
        "wall_s": wall,
        "cpu_s": cpu,
        "trials_per_s": trials / wall if wall else None,
        "peak_rss_after_sweep_mib": rss_after_sweep,
        "peak_rss_after_to_frame_mib": rss_after_frame,
        "store_mib": store_mib,
    }


def _children_cpu_s() -> float:
    """CPU seconds of reaped child processes so far (user + system)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return own / 1024.0  # Linux reports KiB


def _child_main(args: argparse.Namespace) -> None:
    if args.child == "million":
        out: dict[str, Any] = _child_million(args)
    elif args.child in ("engine", "engine-mp"):
        out = _child_engine(args)
    else:
        out = asyncio.run(_child_http(args))
    out.setdefault("children_cpu_s", _children_cpu_s())
    out["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(out), flush=True)


# -- the parent: one server, one child process per case -------------------------------------


def _run_case(
    args: argparse.Namespace, kind: str, base_url: str, concurrency: int
) -> dict[str, Any]:
    total = args.requests or concurrency * args.rounds
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--base-url",
        base_url,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(total),
        "--max-seconds",
        str(args.max_seconds),
        "--body-bytes",
        str(args.body_bytes),
        "--processes",
        str(args.processes),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=4 * args.max_seconds + 120
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"skipped": True, "reason": f"exit {proc.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["requests"] = total
    return result


def _table(rows: list[dict[str, Any]], latency: float) -> str:
    header = (
        "| in flight | client | trials | trials/s | % ideal | vs aiohttp | CPU ms/trial "
        "| peak RSS MiB | server CPU ms/req |"
    )
    lines = [header, "|" + "---|" * 9]
    base: dict[int, float] = {}
    for row in rows:
        if row["client"] == "aiohttp" and not row.get("skipped"):
            base[row["concurrency"]] = row["rate"]
    for row in rows:
        c = row["concurrency"]
        if row.get("skipped"):
            lines.append(f"| {c} | {row['client']} | skipped: {row['reason']} |||||||")
            continue
        ideal = c / latency
        ratio = row["rate"] / base[c] if base.get(c) else float("nan")
        lines.append(
            f"| {c} | {row['client']} | {row['done']} | {row['rate']:.0f} "
            f"| {100 * row['rate'] / ideal:.0f} % | {ratio:.2f} | {row['cpu_ms']:.3f} "
            f"| {row['peak_rss_mib']:.0f} | {row['server_ms']:.3f} |"
        )
    return "\n".join(lines)


def _parent_main(args: argparse.Namespace) -> None:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    clients = [c.strip() for c in args.clients.split(",")]
    for client in clients:
        if client not in CLIENTS:
            raise SystemExit(f"unknown client {client!r}; valid clients: {', '.join(CLIENTS)}")
    load = os.getloadavg()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} at start, latency {args.latency * 1000:.0f} ms, "
        f"body {args.body_bytes} B",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    with spawn(latency=args.latency) as server:
        for concurrency in concurrencies:
            for kind in clients:
                before = server.stats()
                out = _run_case(args, kind, server.base_url, concurrency)
                after = server.stats()
                row: dict[str, Any] = {"client": kind, "concurrency": concurrency, **out}
                if not out.get("skipped"):
                    served = max(1, after["requests"] - before["requests"])
                    row["rate"] = out["done"] / out["wall_s"] if out["wall_s"] else 0.0
                    cpu = out["cpu_s"] + out.get("children_cpu_s", 0.0)
                    row["cpu_ms"] = 1000 * cpu / max(1, out["done"])
                    row["server_ms"] = 1000 * (after["cpu_s"] - before["cpu_s"]) / served
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(_table(rows, args.latency))
    end_load = os.getloadavg()
    print(f"# load average {end_load[0]:.2f} at end")


def _million_main(args: argparse.Namespace) -> None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "million",
        "--trials",
        str(args.trials),
        "--concurrency",
        str(args.million_concurrency),
    ]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.trials} simulated trials")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"million: failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return
    print(json.dumps(json.loads(lines[-1]), indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="32,128,512,1024", help="comma-separated")
    parser.add_argument("--clients", default=",".join(DEFAULT_CLIENTS), help="comma-separated")
    parser.add_argument("--latency", type=float, default=0.1, help="server latency, seconds")
    parser.add_argument("--rounds", type=int, default=20, help="requests = rounds × concurrency")
    parser.add_argument("--requests", type=int, default=0, help="fixed request count per case")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cut-off per case")
    parser.add_argument("--body-bytes", type=int, default=4000, help="request body size")
    parser.add_argument("--processes", type=int, default=2, help="worker processes, engine-mp")
    parser.add_argument("--million", action="store_true", help="the 1e6-trial memory check")
    parser.add_argument("--trials", type=int, default=1_000_000, help="trials for --million")
    parser.add_argument("--million-concurrency", type=int, default=256)
    parser.add_argument("--child", choices=[*CLIENTS, "million"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.concurrency = int(args.concurrency)
        _child_main(args)
    elif args.million:
        _million_main(args)
    else:
        _parent_main(args)


if __name__ == "__main__":
    main()
