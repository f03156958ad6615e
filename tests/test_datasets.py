from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from afperturb import datasets
from afperturb.errors import BackendResponseError, DesignError

ADVBENCH_CSV = (
    "goal,target\n"
    '"Stand-in request one","Sure, here is one"\n'
    '"Stand-in request two","Sure, here is two"\n'
    '"Stand-in request one","Sure, here is one"\n'
)


def test_synthetic_is_deterministic_labelled_and_unique() -> None:
    a = datasets.synthetic(400, seed=0)
    b = datasets.synthetic(400, seed=0)
    c = datasets.synthetic(400, seed=1)
    assert a == b
    assert [r.id for r in a] != [r.id for r in c]
    assert len({r.id for r in a}) == 400
    assert len({r.text for r in a}) == 400
    assert all(r.category and r.source == "synthetic" for r in a)
    assert {r.category for r in a} == {
        "cooking",
        "travel",
        "science",
        "coding",
        "writing",
        "household",
    }
    # A prefix of a larger set has the same requests (ids do not depend on n).
    assert datasets.synthetic(10, seed=0) == a[:10]
    assert datasets.synthetic(0) == []
    with pytest.raises(DesignError):
        datasets.synthetic(-1)


def test_synthetic_has_no_harmful_vocabulary() -> None:
    words = ("weapon", "bomb", "poison", "hack", "kill", "drug", "explosive", "malware")
    for r in datasets.synthetic(300):
        assert not any(w in r.text.lower() for w in words), r.text


def test_request_id_is_stable() -> None:
    assert datasets.request_id("hello", "x") == datasets.request_id("hello", "x")
    assert datasets.request_id("hello", "x") != datasets.request_id("hello", "y")
    assert datasets.request_id("hello", "x").startswith("r")
    assert len(datasets.request_id("hello", "x")) == 13


def test_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "reqs.csv"
    path.write_text("prompt,kind,note\nfirst one,a,n1\nsecond one,b,\nfirst one,a,n1\n")
    reqs = datasets.from_csv(path, text_column="prompt", category_column="kind")
    assert [r.text for r in reqs] == ["first one", "second one"]
    assert [r.category for r in reqs] == ["a", "b"]
    assert reqs[0].source == "reqs"
    assert reqs[0].metadata == {"note": "n1"}
    assert reqs[0].id == datasets.request_id("first one", "reqs")
    with pytest.raises(DesignError, match=r"unknown column 'text'.*'prompt', 'kind', 'note'"):
        datasets.from_csv(path)


def test_from_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "reqs.jsonl"
    rows = [{"q": "alpha", "tags": ["x"]}, {"q": "beta", "tags": []}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    reqs = datasets.from_jsonl(path, text_field="q", source="mine")
    assert [r.text for r in reqs] == ["alpha", "beta"]
    assert reqs[0].metadata == {"tags": '["x"]'}
    assert reqs[1].source == "mine"
    path.write_text('{"q": "ok"}\nnot json\n')
    with pytest.raises(DesignError, match="line 2"):
        datasets.from_jsonl(path, text_field="q")
    path.write_text('{"q": ""}\n')
    with pytest.raises(DesignError, match="row 1 has no text"):
        datasets.from_jsonl(path, text_field="q")


def test_advbench_downloads_once_and_caches(tmp_path: Path) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, text=ADVBENCH_CSV)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    first = datasets.advbench(client=client, cache_dir=tmp_path)
    second = datasets.advbench(client=client, cache_dir=tmp_path, limit=1)
    assert calls == [datasets.ADVBENCH_URL]
    assert [r.text for r in first] == ["Stand-in request one", "Stand-in request two"]
    assert first[0].metadata == {"target": "Sure, here is one"}
    assert first[0].source == "advbench"
    assert second == first[:1]
    assert (tmp_path / "advbench_harmful_behaviors.csv").is_file()


def test_advbench_http_error_is_clear(tmp_path: Path) -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with pytest.raises(BackendResponseError, match="HTTP 503") as info:
        datasets.advbench(client=client, cache_dir=tmp_path)
    assert info.value.status_code == 503
    assert not list(tmp_path.iterdir())  # nothing half-written in the cache


def test_llm_lat_pages_and_caches(tmp_path: Path) -> None:
    total = 230
    seen: list[tuple[int, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        assert params["dataset"] == "LLM-LAT/harmful-dataset"
        offset, length = int(params["offset"]), int(params["length"])
        seen.append((offset, length))
        rows = [
            {"row_idx": i, "row": {"prompt": f"stand-in {i}", "rejected": "r", "chosen": "c"}}
            for i in range(offset, min(offset + length, total))
        ]
        return httpx.Response(200, json={"rows": rows, "num_rows_total": total})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    reqs = datasets.llm_lat(client=client, cache_dir=tmp_path)
    assert seen == [(0, 100), (100, 100), (200, 100)]
    assert len(reqs) == total
    assert reqs[5].text == "stand-in 5"
    assert reqs[5].source == "llm_lat"
    assert reqs[5].metadata == {"rejected": "r", "chosen": "c"}
    again = datasets.llm_lat(client=client, cache_dir=tmp_path, limit=10)
    assert len(seen) == 3
    assert again == reqs[:10]


def test_llm_lat_bad_body(tmp_path: Path) -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})))
    with pytest.raises(BackendResponseError, match="offset 0"):
        datasets.llm_lat(client=client, cache_dir=tmp_path)
