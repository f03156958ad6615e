"""Prompt caching: breakpoints and cache keys on the wire, usage and prices (issue 18)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from afperturb import models
from afperturb.datasets import synthetic
from afperturb.design import Perturbation
from afperturb.models import pricing
from afperturb.models.anthropic import AnthropicMessages, anthropic_usage
from afperturb.models.openai import OpenAIChat, openai_usage, prompt_cache_key
from afperturb.records import Completion, Message, SamplingParams, Usage
from afperturb.results import SweepResult
from afperturb.store import Store, model_hash
from afperturb.sweep import sweep

SYSTEM = Message(role="system", content="S" * 5000)
TURNS = [
    SYSTEM,
    Message(role="user", content="request"),
    Message(role="assistant", content="<SCRATCHPAD_REASONING>first part"),
    Message(role="user", content="<NEXT/>"),
]


def _anthropic(**kw: Any) -> tuple[AnthropicMessages, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": {
                    "input_tokens": 20,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 1250,
                    "output_tokens": 7,
                },
            },
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AnthropicMessages("claude-3-opus-20240229", api_key="k", client=client, **kw), seen


async def test_anthropic_marks_the_system_prompt_and_the_last_assistant_turn() -> None:
    model, seen = _anthropic()
    c = await model.generate(TURNS, SamplingParams())
    body = seen[0]
    assert body["system"] == [
        {"type": "text", "text": SYSTEM.content, "cache_control": {"type": "ephemeral"}}
    ]
    assistant = body["messages"][1]
    assert assistant["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert assistant["content"][0]["text"] == "<SCRATCHPAD_REASONING>first part"
    assert body["messages"][2] == {"role": "user", "content": "<NEXT/>"}
    # Reported cache tokens are added into input_tokens and kept apart.
    assert (c.usage.input_tokens, c.usage.cache_read_tokens, c.usage.cache_write_tokens) == (
        1270,
        1250,
        0,
    )
    # A prefill is continued, never marked; a first turn has no assistant turn to mark.
    await model.generate(
        [*TURNS[:2], Message(role="assistant", content="The user")], SamplingParams()
    )
    assert seen[1]["messages"][-1] == {"role": "assistant", "content": "The user"}
    assert all(isinstance(m["content"], str) for m in seen[1]["messages"])


async def test_caching_off_sends_plain_text_and_changes_no_cache_key() -> None:
    on, _ = _anthropic()
    off, seen = _anthropic(prompt_caching=False)
    await off.generate(TURNS, SamplingParams())
    assert seen[0]["system"] == SYSTEM.content
    assert all(isinstance(m["content"], str) for m in seen[0]["messages"])
    # Caching changes the bill, not the question: the completion cache key is the same.
    assert on.config() == off.config() and model_hash(on.config()) == model_hash(off.config())
    chat_on = OpenAIChat("gpt-4o", api_key="k", prompt_caching=True)
    chat_off = OpenAIChat("gpt-4o", api_key="k", prompt_caching=False)
    assert model_hash(chat_on.config()) == model_hash(chat_off.config())


def test_openai_prompt_cache_key_per_system_prompt_and_only_on_openais_api() -> None:
    params = SamplingParams()
    own = OpenAIChat("gpt-4o", api_key="k")
    body = own.body(TURNS, params)
    assert body["prompt_cache_key"] == prompt_cache_key(TURNS)
    other_request = [SYSTEM, Message(role="user", content="another request")]
    assert own.body(other_request, params)["prompt_cache_key"] == body["prompt_cache_key"]
    other_prompt = [Message(role="system", content="T" * 5000), TURNS[1]]
    assert own.body(other_prompt, params)["prompt_cache_key"] != body["prompt_cache_key"]
    local = OpenAIChat("m", api_key="k", base_url="http://127.0.0.1:8000/v1")
    assert "prompt_cache_key" not in local.body(TURNS, params)  # a local server may not know it
    forced = OpenAIChat("m", api_key="k", base_url="http://127.0.0.1:8000/v1", prompt_caching=True)
    assert "prompt_cache_key" in forced.body(TURNS, params)
    assert (
        models.get("openai/gpt-4o", api_key="k", prompt_caching=False)
        .body(TURNS, params)
        .get("prompt_cache_key")
        is None
    )  # type: ignore[attr-defined]


def test_usage_parsers() -> None:
    assert openai_usage(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 1920},
        }
    ) == Usage(input_tokens=2000, output_tokens=10, cache_read_tokens=1920)
    assert openai_usage({"prompt_tokens": 5, "completion_tokens": 1}) == Usage(
        input_tokens=5, output_tokens=1
    )
    assert anthropic_usage(
        {"input_tokens": 10, "cache_creation_input_tokens": 1500, "output_tokens": 3}
    ) == Usage(input_tokens=1510, output_tokens=3, cache_write_tokens=1500)
    assert anthropic_usage(None) == Usage()


def test_prices_carry_cache_rates_and_cost_uses_them() -> None:
    opus = pricing.price("anthropic/claude-3-opus-20240229")
    assert opus is not None
    assert (opus.cache_read_per_m, opus.cache_write_per_m) == pytest.approx((1.5, 18.75))
    usage = Usage(
        input_tokens=10_000, output_tokens=0, cache_read_tokens=8_000, cache_write_tokens=1_000
    )
    expected = (1_000 * 15 + 8_000 * 1.5 + 1_000 * 18.75) / 1e6
    assert pricing.cost("anthropic/claude-3-opus-20240229", usage) == pytest.approx(expected)
    gpt = pricing.price("openai/gpt-4o")
    assert gpt is not None and gpt.cache_read_per_m == pytest.approx(1.25)
    assert pricing.price("openai/gpt-4.1").cache_read_per_m == pytest.approx(0.5)  # type: ignore[union-attr]
    plain = Usage(input_tokens=10_000, output_tokens=0)
    assert pricing.cost("openai/gpt-4o", plain) == pytest.approx(0.025)
    try:
        pricing.set_price("my-claude-finetune", 2.0, 10.0, cache_read_per_m=0.3)
        mine = pricing.price("my-claude-finetune")
        # Not a known provider: no derived write rate (None: billed as input).
        assert mine is not None and (mine.cache_read_per_m, mine.cache_write_per_m) == (0.3, None)
        pricing.set_price("claude-3-opus", 10.0, 50.0)  # a known provider: rates derived
        assert pricing.price("claude-3-opus").cache_write_per_m == pytest.approx(12.5)  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="cache_write_per_m"):
            pricing.set_price("x", 1.0, 1.0, cache_write_per_m=-1.0)
    finally:
        pricing.reset_prices()


class CachingModel:
    """Reports what a provider with a warm prompt cache reports: most of the prompt read."""

    name = "anthropic/claude-3-opus-20240229"

    def config(self) -> dict[str, Any]:
        return {"provider": "fake", "model": "caching"}

    async def generate(
        self, messages: Any, params: SamplingParams, context: Any = None
    ) -> Completion:
        usage = Usage(input_tokens=2000, output_tokens=10, cache_read_tokens=1500)
        return Completion(text="<OUTPUT><rejected/></OUTPUT>", usage=usage)

    async def aclose(self) -> None:
        return None


def _sweep(store: Path | None) -> Any:
    design = Perturbation("helpful_only", vary={"tier": ["free", "paid"]})
    return sweep(design, CachingModel(), requests=synthetic(3), store=store, progress=False)


@pytest.mark.parametrize("stored", [False, True])
def test_cache_tokens_reach_the_store_the_frame_and_the_cost(tmp_path: Path, stored: bool) -> None:
    res = _sweep(tmp_path / "s.sqlite" if stored else None)
    frame = res.to_frame()
    assert (frame["cache_read_tokens"] == 1500).all() and (frame["cache_write_tokens"] == 0).all()
    assert frame["cache_read_tokens"].dtype == np.int64
    expected = (500 * 15 + 1500 * 1.5 + 10 * 75) / 1e6  # plain, cache-read and output prices
    assert frame["cost_usd"].to_numpy() == pytest.approx(np.full(6, expected))


def test_a_store_written_before_the_cache_columns_reads_them_as_zero(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _sweep(path).store.close()
    with sqlite3.connect(path) as db:  # what a store written before issue 18 looks like
        for column in ("cache_read_tokens", "cache_write_tokens"):
            db.execute(f"ALTER TABLE trials DROP COLUMN {column}")
    with Store.open(path, create=False, readonly=True) as ro:
        frame = SweepResult.load(ro).to_frame()
        assert (frame["cache_read_tokens"] == 0).all() and len(frame) == 6
        assert [len(r) for c in ro.trial_table_chunks() for r in c] == [14] * 6
    with Store.open(path) as rw:  # writable: the columns are added (no version change)
        columns = {r[1] for r in rw._read.execute("PRAGMA table_info(trials)")}
        assert {"cache_read_tokens", "cache_write_tokens"} <= columns
        assert (SweepResult.load(rw).to_frame()["cache_read_tokens"] == 0).all()


def test_batches_are_cut_where_a_condition_ends_when_that_keeps_it_whole() -> None:
    from afperturb.batch._runner import chunk

    items = [("id", {})] * 7
    groups = ["a", "a", "a", "b", "b", "b", "c"]
    # Without groups the cut falls inside "b"; with them "b" moves whole to the next batch.
    assert chunk(items, [1] * 7, 5, 10**6) == [[0, 1, 2, 3, 4], [5, 6]]
    assert chunk(items, [1] * 7, 5, 10**6, groups) == [[0, 1, 2], [3, 4, 5, 6]]
    # A group larger than a batch is split as before (moving it would not keep it whole).
    big = ["a", "b", "b", "b", "b", "b", "b"]
    assert chunk(items, [1] * 7, 5, 10**6, big) == [[0, 1, 2, 3, 4], [5, 6]]
