"""Replay: exact-match serving from tuples, mappings and (lazily) a store."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import afperturb.models as models
from afperturb.errors import BackendResponseError
from afperturb.models.base import GenerationContext, is_retryable
from afperturb.models.replay import Replay, replay_key
from afperturb.records import Completion, Message, Request, SamplingParams

MSGS = [Message(role="system", content="S"), Message(role="user", content="Q")]
P = SamplingParams(temperature=1.0)


def ctx(sample: int = 0) -> GenerationContext:
    return GenerationContext(request=Request(id="r1", text="q"), sample=sample)


async def test_tuples_match_exactly() -> None:
    items = [
        (MSGS, P, 0, Completion(text="zero", model="openai/a")),
        (MSGS, P, 1, Completion(text="one", model="openai/a")),
        (MSGS, SamplingParams(temperature=0.0), 0, Completion(text="cold", model="openai/a")),
    ]
    r = Replay(items)
    assert "unloaded" in repr(r)
    assert (await r.generate(MSGS, P, ctx(0))).text == "zero"
    assert (await r.generate(MSGS, P, ctx(1))).text == "one"
    assert (await r.generate(MSGS, SamplingParams(temperature=0.0), ctx(0))).text == "cold"
    assert len(r) == 3
    with pytest.raises(BackendResponseError, match="no stored completion") as info:
        await r.generate([*MSGS, Message(role="user", content="<NEXT/>")], P, ctx(0))
    assert not is_retryable(info.value)
    assert info.value.request_id == "r1"
    with pytest.raises(BackendResponseError):
        await r.generate(MSGS, P, ctx(2))


async def test_mapping_and_model_filter() -> None:
    key = replay_key(MSGS, P, 0)
    r = Replay({key: Completion(text="m", model="x")})
    assert (await r.generate(MSGS, P)).text == "m"
    filtered = Replay({key: Completion(text="m", model="x")}, model="y")
    with pytest.raises(BackendResponseError):
        await filtered.generate(MSGS, P)
    assert replay_key(MSGS, P, 0) != replay_key(MSGS, P, 1)
    assert replay_key(MSGS, P, 0) != replay_key(list(reversed(MSGS)), P, 0)


@dataclass
class Row:
    messages: tuple[Message, ...]
    params: SamplingParams
    sample: int
    completion: Completion


async def test_store_path_is_read_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    class FakeStore:
        @classmethod
        def open(cls, path: str, **options: object) -> FakeStore:
            opened.append(path)
            return cls()

        def close(self) -> None:
            opened.append("closed")

        def iter_completions(self) -> list[Row]:
            return [
                Row(tuple(MSGS), P, 0, Completion(text="stored", model="sim/a")),
                Row(tuple(MSGS), P, 0, Completion(text="other-model", model="sim/b")),
            ]

    fake = types.ModuleType("afperturb.store")
    fake.Store = FakeStore  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "afperturb.store", fake)
    r = models.get("replay/runs/x.sqlite", model="sim/b")
    assert isinstance(r, Replay)
    assert r.name == "replay/runs/x.sqlite"
    assert opened == []
    assert (await r.generate(MSGS, P)).text == "other-model"
    assert (await r.generate(MSGS, P)).text == "other-model"
    assert opened == ["runs/x.sqlite", "closed"]
    assert r.config() == {"provider": "replay", "source": "runs/x.sqlite", "model": "sim/b"}


def test_bad_items_name_the_shape() -> None:
    with pytest.raises(TypeError, match="messages, params, sample"):
        len(Replay([42]))


@dataclass
class SeededRow(Row):
    seed: int = 0


async def test_seeded_items_replay_per_seed() -> None:
    r = Replay(
        [
            SeededRow(tuple(MSGS), P, 0, Completion(text="s0"), seed=0),
            SeededRow(tuple(MSGS), P, 0, Completion(text="s1"), seed=1),
        ]
    )
    seeded = GenerationContext(request=Request(id="r1", text="q"), seed=1)
    assert (await r.generate(MSGS, P, seeded)).text == "s1"
    assert (await r.generate(MSGS, P, ctx(0))).text == "s0"


async def test_real_store_roundtrip(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("afperturb.store")
    path = str(tmp_path / "runs.sqlite")
    store = store_mod.Store.open(path)
    comp = Completion(text="from the store", model="sim/opus-like")
    key = store_mod.cache_key({"provider": "sim"}, MSGS, P, 0)
    store.put_completion(key, "mh", MSGS, P, 0, comp).result()
    store.close()
    r = models.get("replay/" + path)
    assert (await r.generate(MSGS, P, ctx(0))).text == "from the store"
