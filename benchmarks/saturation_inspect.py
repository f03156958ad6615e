"""The rate-limit saturation workload through inspect_ai, for comparison (benchmark only).

Same server (``benchmarks/provider_server.py``), same limits, same prompts (the ``paper``
design rendered for synthetic requests) as ``benchmarks/saturation.py``, sent by
``inspect_ai.eval`` with its OpenAI provider (``max_connections`` in flight). inspect_ai is
not a dependency of afperturb: run this with a Python that has both installed, e.g.

    python -m venv /tmp/inspvenv && /tmp/inspvenv/bin/pip install inspect_ai -e .
    /tmp/inspvenv/bin/python benchmarks/saturation_inspect.py --trials 4500 --rpm 1800

Prints one JSON line: wall seconds, the limit-bound ideal, their ratio, 429 share, CPU per
sample of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import afperturb as af


def prompts(n: int) -> list[list[dict[str, str]]]:
    """``n`` rendered prompts of the paper design (as the afperturb sweep sends them)."""
    design = af.Perturbation.preset("paper")
    conditions = design.conditions()
    per = -(-n // len(conditions))
    reqs = af.datasets.synthetic(per)
    out = []
    for condition in conditions:
        for request in reqs:
            msgs = design.scenario.render(condition, request.text)
            out.append([{"role": m.role, "content": m.content} for m in msgs])
    return out[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4500)
    parser.add_argument("--rpm", type=float, default=1800.0)
    parser.add_argument("--tpm", type=float, default=100_000_000.0)
    parser.add_argument("--median", type=float, default=3.0)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--connections", type=int, default=2048)
    args = parser.parse_args()

    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser
    from inspect_ai.solver import generate

    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("provider_server.py")),
         "--rpm", str(args.rpm), "--tpm", str(args.tpm), "--median", str(args.median),
         "--sigma", str(args.sigma)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1"
        samples = []
        for i, msgs in enumerate(prompts(args.trials)):
            chat = [
                ChatMessageSystem(content=m["content"])
                if m["role"] == "system"
                else ChatMessageUser(content=m["content"])
                for m in msgs
                if m["role"] in ("system", "user")
            ]
            samples.append(Sample(input=chat, id=i))
        task = Task(dataset=samples, solver=generate())
        os.environ["OPENAI_API_KEY"] = "x"
        cpu0, t0 = time.process_time(), time.monotonic()
        with tempfile.TemporaryDirectory() as logs:
            (log,) = eval(
                task,
                model="openai/bench",
                model_base_url=url,
                max_connections=args.connections,
                log_dir=logs,
                display="none",
                max_tokens=40,
                model_args={"responses_api": False},  # Chat Completions, as afperturb sends
            )
            if log.status != "success":
                raise SystemExit(f"inspect_ai eval ended {log.status}: {log.error}")
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()
    finally:
        server.terminate()
        server.wait(timeout=10)
    capacity = args.rpm  # a full minute's bucket at start
    ideal = max(0.0, args.trials - capacity) / (args.rpm / 60.0) + args.median
    rejected = stats.get("rejected", stats.get("429", 0))
    total = stats.get("requests", args.trials)
    print(json.dumps({
        "client": f"inspect_ai {__import__('inspect_ai').__version__}",
        "trials": args.trials, "wall_s": round(wall, 1), "ideal_s": round(ideal, 1),
        "ratio": round(wall / ideal, 3), "share_429": round(rejected / max(total, 1), 4),
        "cpu_ms_per_sample": round(1000 * cpu / args.trials, 2), "stats": stats,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
