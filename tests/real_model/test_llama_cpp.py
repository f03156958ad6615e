"""A real model behind a real server: SmolLM2-135M served by llama.cpp (issue 16).

No mock is as messy as a real model: this one mostly ignores the tag format, stops mid-sentence
at the token limit, and answers judge prompts with anything. Every path must still end in a
recorded outcome. Run by ``scripts/real_model.sh`` (which ``.ci/run`` calls after the main
suite); each trial takes seconds on this CPU, so the designs are a handful of trials with small
``max_tokens``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import afperturb as af
from afperturb.classify import load_judge
from afperturb.classify.tags import FORMAT_FAILURES, VERDICTS
from tests.real_model.conftest import Server

REPO = Path(__file__).resolve().parents[2]
#: Small replies: every turn stays well inside the server's context.
PARAMS = af.SamplingParams(max_tokens=64, temperature=1.0)
SHORT = {"examples": "cut"}


def _chat(server: Server) -> af.models.Model:
    return af.models.get("openai/smollm2", base_url=server.base_url, api_key="local")


def _design() -> af.Perturbation:
    return af.Perturbation("helpful_only", vary={"tier": ["free", "paid"]}, fixed=SHORT)


@pytest.fixture(scope="module")
def chat_run(server: Server, tmp_path_factory: pytest.TempPathFactory) -> af.SweepResult:
    """The chat backend on a small design: 2 conditions × 2 requests, one sample each."""
    store = tmp_path_factory.mktemp("chat") / "chat.sqlite"
    return _design().sweep(
        _chat(server),
        requests=af.datasets.synthetic(2),
        params=PARAMS,
        store=str(store),
        concurrency=2,
        progress=False,
    )


def test_chat_sweep_ends_every_trial_with_an_outcome(chat_run: af.SweepResult) -> None:
    trials = list(chat_run.trials())
    assert len(trials) == 4
    for t in trials:
        assert t.status in ("completed", "failed"), t
        if t.status == "failed":
            assert t.error, "a failed trial names its reason"
    done = [t for t in trials if t.status == "completed"]
    assert done, "the server answered nothing"
    for t in done:
        assert t.completions and all(c.finish_reason in ("stop", "length") for c in t.completions)
        assert sum(c.usage.input_tokens for c in t.completions) > 0
        assert sum(c.usage.output_tokens for c in t.completions) > 0
    # A reply without its <OUTPUT> gets the <NEXT/> continuation, with real text in it.
    continued = [t for t in done if len(t.completions) > 1]
    assert continued and any(c.text.strip() for t in continued for c in t.completions[1:])
    frame = chat_run.to_frame()
    assert set(frame["label"].dropna()) <= set(VERDICTS) | set(FORMAT_FAILURES)
    assert (frame.loc[frame["status"] == "completed", "input_tokens"] > 0).all()
    outcomes = collections.Counter(frame["label"].fillna(frame["status"]))
    print(f"\nreal model chat outcomes: {dict(outcomes)}")


def test_completions_backend_with_a_prefill(server: Server, tmp_path: Path) -> None:
    design = af.Perturbation(
        "helpful_only", vary={"tier": ["free"]}, fixed={**SHORT, "prefill": "user_is_asking"}
    )
    prefill = design.scenario.render(design.conditions()[0], "x")[-1]
    assert prefill.role == "assistant" and prefill.content
    model = af.models.get("openai-completions/smollm2", base_url=server.base_url, api_key="local")
    res = design.sweep(
        model,
        requests=af.datasets.synthetic(1),
        params=af.SamplingParams(max_tokens=48),
        store=str(tmp_path / "completions.sqlite"),
        progress=False,
    )
    (trial,) = list(res.trials())
    assert trial.status == "completed", trial.error
    assert trial.text.startswith(prefill.content.rstrip())  # the prefill, then real text
    assert len(trial.text) > len(prefill.content) + 10
    assert trial.completions[0].usage.output_tokens > 0


def test_a_prompt_longer_than_the_context_fails_once_with_the_servers_reason(
    server: Server, tmp_path: Path
) -> None:
    """The default prompt (worked examples kept, ~8,200 tokens) against n_ctx 2048."""
    design = af.Perturbation("helpful_only", vary={"tier": ["free"]})
    before = server.posts()
    res = design.sweep(
        _chat(server),
        requests=af.datasets.synthetic(1),
        params=PARAMS,
        store=str(tmp_path / "long.sqlite"),
        progress=False,
    )
    (trial,) = list(res.trials())
    assert trial.status == "failed"
    assert "context" in (trial.error or "") and "HTTP 400" in (trial.error or "")
    assert "after 1 attempt(s)" in (trial.error or "")
    assert server.posts() - before == 1  # not retried: sending it again cannot help


def test_a_judge_whose_model_is_the_real_server(server: Server, chat_run: af.SweepResult) -> None:
    judge = load_judge("strongreject", max_tokens=96).using(_chat(server))
    (run,) = chat_run.classify([judge])
    done = [t for t in chat_run.trials() if t.status == "completed"]
    labels = list(chat_run.store.labels(classifier="strongreject"))
    assert {lab.trial_key for lab in labels} == {t.key for t in done}  # every trial: a label
    counts = collections.Counter(lab.value for lab in labels)
    assert set(counts) <= {"compliant", "not_compliant", "error", "nothing_to_read"}
    # The replies ignore the tags, yet the judge was asked about them (issue 16).
    assert run.requests > 0 and counts["nothing_to_read"] < len(done)
    for lab in labels:
        if lab.value == "error":
            assert lab.details.get("error"), lab  # a recorded reason, never a crash
    frame = chat_run.to_frame()
    print(f"\nreal model judge labels: {dict(counts)}; {run!r}")
    assert len(frame) == 4


SWEEP_SCRIPT = """
import sys
import afperturb as af
design = af.Perturbation("helpful_only", vary={"tier": ["free", "paid"]}, fixed={"examples": "cut"})
model = af.models.get("openai/smollm2", base_url=sys.argv[1], api_key="local")
design.sweep(model, requests=af.datasets.synthetic(3), params=af.SamplingParams(max_tokens=48),
             store=sys.argv[2], concurrency=1, progress=False)
"""


def _completed(store: Path) -> dict[str, str]:
    if not store.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT key, trial FROM trials WHERE status = 'completed'").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return {}
    return {str(k): str(v) for k, v in rows}


def _settled_posts(server: Server, quiet_s: float = 5.0, limit_s: float = 90.0) -> int:
    """The server's request count once it has not moved for ``quiet_s`` seconds."""
    count, since, start = server.posts(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() - start < limit_s:
        time.sleep(0.25)
        now = server.posts()
        if now != count:
            count, since = now, time.monotonic()
    return count


def _completion_rows(store: Path) -> int:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM completions").fetchone()[0])


def test_kill_9_mid_sweep_then_resume_resends_nothing_completed(
    server: Server, tmp_path: Path
) -> None:
    store = tmp_path / "killed.sqlite"
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(SWEEP_SCRIPT), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), server.base_url, str(store)], env=env)
    deadline = time.monotonic() + 300
    try:
        while len(_completed(store)) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no trial completed within 300 s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _completed(store)
    assert 2 <= len(before) < 6
    posts = _settled_posts(server)  # a request in flight at the kill ends on the server first
    rows = _completion_rows(store)
    res = _design().sweep(
        _chat(server),
        requests=af.datasets.synthetic(3),
        params=af.SamplingParams(max_tokens=48),
        store=str(store),
        concurrency=1,
        progress=False,
    )
    after = _completed(store)
    statuses = [t.status for t in res.trials()]
    assert len(statuses) == 6 and set(statuses) <= {"completed", "failed"}
    for key, trial in before.items():  # what was done is kept as it was
        assert json.loads(after[key]) == json.loads(trial)
    sent, stored = server.posts() - posts, _completion_rows(store) - rows
    assert sent == stored, f"{sent} requests sent for {stored} new completions"
    assert sent > 0  # the unfinished trials were run


def test_the_report_builds_from_the_real_models_store(
    chat_run: af.SweepResult, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    path = chat_run.store.path
    done = subprocess.run(
        [sys.executable, "-m", "afperturb", "report", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "openai/smollm2" in html
    assert "openai/smollm2" in (out / "report.md").read_text(encoding="utf-8")
