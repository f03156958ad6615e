"""Judges in batch mode (issue 8): BatchedModel gathers judge votes into provider batches."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from _batch_mock import BatchMock, split_requests
from _sweepkit import FakePerturbation

from afperturb.batch import BatchedModel
from afperturb.classify._judge_run import run_async
from afperturb.classify.judges import load_judge
from afperturb.errors import BackendResponseError, DesignError
from afperturb.models.openai import OpenAIChat
from afperturb.models.simulated import from_name
from afperturb.records import Message, SamplingParams
from afperturb.results import SweepResult
from afperturb.store import Store
from afperturb.sweep import sweep_async


async def _noop(seconds: float) -> None:
    return None


def _chat(mock: BatchMock) -> OpenAIChat:
    client = httpx.AsyncClient(transport=mock.transport())
    return OpenAIChat("judge-model", base_url="http://mock/v1", api_key="k", client=client)


async def _swept(path: Path, n: int = 20) -> SweepResult:
    client = httpx.AsyncClient(transport=BatchMock().transport())
    model = OpenAIChat("mock-model", base_url="http://mock/v1", api_key="k", client=client)
    return await sweep_async(
        FakePerturbation(), model, split_requests(n), store=path, progress=False, sleep=_noop
    )


def _labels(path: Path) -> dict[str, tuple[str, bool | None]]:
    with Store.open(path) as db:
        return {
            lab.trial_key: (lab.value, lab.af_reasoning)
            for lab in db.labels(classifier="af_reasoning")
        }


async def test_judge_votes_go_out_in_batches_and_match_realtime(tmp_path: Path) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    res = await _swept(a)
    await _swept(b)  # the same deterministic sweep, to judge in realtime
    mock = BatchMock()
    with Store.open(a) as db:
        batched = BatchedModel(_chat(mock), store=db, sleep=_noop, poll_interval=5.0)
        runs = await run_async(res, load_judge("af_reasoning").using(batched), concurrency=100)
    assert runs[0].labelled == 40 and mock.realtime_calls == 0
    # 40 first chunks of 8 votes in one batch; sequential voting asks for more in two rounds
    assert mock.batches_created == batched.batches_submitted == 3
    realtime = BatchMock()
    with Store.open(b) as db:
        await run_async(
            SweepResult.load(db), load_judge("af_reasoning").using(_chat(realtime)), concurrency=8
        )
    # 50 distinct judge requests (both tiers reject some requests alike: same transcript);
    # a twin asked while the first is in flight waits for its answer instead of paying again.
    # The mock's AF verdict hashes the whole judge prompt, so these counts (and the 10 AF
    # labels below) move whenever the AF judge's prompt text changes.
    assert realtime.batches_created == 0 and realtime.realtime_calls == 50
    labels = _labels(a)
    assert labels == _labels(b) and len(labels) == 40
    assert sum(af is True for _, af in labels.values()) == 10


async def test_a_new_process_waits_for_the_recorded_judge_batches(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    await _swept(path, n=10)
    mock = BatchMock(hold=True)
    with Store.open(path) as db:
        first = BatchedModel(_chat(mock), store=db, sleep=_noop, poll_interval=0.0)
        task = asyncio.create_task(
            run_async(SweepResult.load(db), load_judge("af_reasoning").using(first), concurrency=50)
        )
        while mock.polls < 5:  # bounded by the mock: each pump pass polls once
            await asyncio.sleep(0)
        task.cancel()  # the process dies while polling
        with pytest.raises(asyncio.CancelledError):
            await task
        # 20 trials, 10 distinct transcripts (both tiers answer alike): each is asked once
        assert mock.batches_created == 1 and db.count("batch_items") == 10
        mock.hold = False
        second = BatchedModel(_chat(mock), store=db, sleep=_noop, poll_interval=0.0)
        runs = await run_async(
            SweepResult.load(db), load_judge("af_reasoning").using(second), concurrency=50
        )
    assert runs[0].labelled == 20
    assert max(mock.submissions.values()) == 1  # nothing recorded went out again
    assert second.batches_submitted == mock.batches_created - 1


async def test_failed_items_raise_after_retries() -> None:
    mock = BatchMock(expire_batches=frozenset(range(1, 10)))
    batched = BatchedModel(_chat(mock), sleep=_noop, max_retries=1)
    msgs = [Message(role="user", content=f"q{i}") for i in range(4)]
    out = await asyncio.gather(
        *(batched.generate([m], SamplingParams()) for m in msgs), return_exceptions=True
    )
    errors = [o for o in out if isinstance(o, BaseException)]
    # 4 sent, 2 expire; resent, 1 expires again and is given up after 2 attempts
    assert len(errors) == 1 and isinstance(errors[0], BackendResponseError)
    assert "batch_expired" in str(errors[0]) and "after 2 attempt" in str(errors[0])
    assert mock.batches_created == 2 and not errors[0].retryable


def test_batched_model_needs_a_batch_backend() -> None:
    with pytest.raises(DesignError, match="valid providers"):
        BatchedModel(from_name("opus-like"))
    model: Any = BatchedModel(_chat(BatchMock()))
    assert model.config() == _chat(BatchMock()).config()
    assert repr(model) == "<BatchedModel openai/judge-model via openai batches>"
