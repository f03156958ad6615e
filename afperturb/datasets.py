"""Request sets: harmless synthetic stand-ins, your own CSV/JSONL, and the papers' datasets.

Every loader returns a list of :class:`~afperturb.records.Request` with a **stable id**: a hash
of the source name and the text, so the same request gets the same id in every run and the
paired statistics can match it across conditions. Exact duplicates (same source and text) are
kept once, because two trials with one request id would be counted as one cluster anyway.

Files are read as UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one);
bytes that are not UTF-8 are a :class:`~afperturb.errors.DesignError` naming the file, line
and column.

The AdvBench and LLM-LAT loaders fetch over :mod:`httpx` (pass ``client=`` to control proxies,
or an ``httpx.MockTransport`` in tests) and keep an on-disk cache, so only the first call needs
the network.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

from afperturb.errors import BackendResponseError, DesignError
from afperturb.records import Request

ADVBENCH_URL = (
    "https://raw.githubusercontent.com/llm-attacks/llm-attacks/main/data/advbench/"
    "harmful_behaviors.csv"
)
#: The Hugging Face dataset viewer API pages rows as JSON (no parquet reader needed).
LLM_LAT_URL = "https://datasets-server.huggingface.co/rows"
LLM_LAT_DATASET = "LLM-LAT/harmful-dataset"
_PAGE = 100

# Harmless stand-ins: the simulated models never read text, so these only need to look like
# requests and carry a category label. Nothing here asks for anything harmful.
_TOPICS: dict[str, tuple[str, ...]] = {
    "cooking": ("a lentil soup", "sourdough bread", "a vegetable curry", "pancakes", "risotto"),
    "travel": ("a weekend in Lisbon", "a rail trip through Norway", "a day in Kyoto", "Patagonia"),
    "science": ("photosynthesis", "plate tectonics", "how vaccines train immunity", "black holes"),
    "coding": ("a binary search", "a CSV parser", "a retry loop with backoff", "a trie"),
    "writing": ("a haiku about autumn", "a limerick about cats", "a short fable", "a toast"),
    "household": ("descaling a kettle", "repotting a fern", "fixing a dripping tap", "composting"),
}
_FRAMES: tuple[str, ...] = (
    "Explain {topic} to a curious teenager.",
    "Give me a step-by-step guide to {topic}.",
    "What are common mistakes with {topic}?",
    "Summarise the key facts about {topic} in five bullet points.",
    "Write a short, friendly introduction to {topic}.",
)


def request_id(text: str, source: str) -> str:
    """Stable id of a request: a hash of its source and text."""
    digest = hashlib.sha256(f"{source}\x00{text}".encode()).hexdigest()
    return "r" + digest[:12]


def make_requests(
    texts: Iterable[str],
    source: str,
    categories: Iterable[str | None] | None = None,
    metadata: Iterable[Mapping[str, str]] | None = None,
) -> list[Request]:
    """Build requests with stable ids from texts, dropping exact duplicates."""
    texts = list(texts)
    cats = list(categories) if categories is not None else [None] * len(texts)
    metas = list(metadata) if metadata is not None else [{}] * len(texts)
    out: dict[str, Request] = {}
    for text, category, meta in zip(texts, cats, metas, strict=True):
        rid = request_id(text, source)
        if rid not in out:
            out[rid] = Request(
                id=rid, text=text, category=category, source=source, metadata=dict(meta)
            )
    return list(out.values())


def synthetic(n: int, seed: int = 0) -> list[Request]:
    """``n`` labelled, harmless stand-in requests for simulated runs (deterministic in seed).

    Example:
        >>> [r.category for r in synthetic(3)]
        ['science', 'writing', 'household']
    """
    if n < 0:
        raise DesignError(f"n must be >= 0, got {n}")
    pool = [
        (category, frame.format(topic=topic))
        for category, topics in _TOPICS.items()
        for topic in topics
        for frame in _FRAMES
    ]
    random.Random(seed).shuffle(pool)
    texts, cats = [], []
    for i in range(n):
        category, text = pool[i % len(pool)]
        if i >= len(pool):  # past the pool: keep texts (and so ids) unique
            text = f"{text} (variant {i // len(pool)})"
        texts.append(text)
        cats.append(category)
    metas = [{"synthetic": "true", "index": str(i)} for i in range(n)]
    return make_requests(texts, "synthetic", cats, metas)


def from_csv(
    path: str | Path,
    text_column: str = "text",
    *,
    category_column: str | None = None,
    source: str | None = None,
) -> list[Request]:
    """Requests from a CSV file; other columns are kept as metadata."""
    file = Path(path)
    rows = list(csv.DictReader(io.StringIO(read_text(file), newline="")))
    return _from_rows(rows, text_column, category_column, source or file.stem, str(file))


def from_jsonl(
    path: str | Path,
    text_field: str = "text",
    *,
    category_field: str | None = None,
    source: str | None = None,
) -> list[Request]:
    """Requests from a JSON-lines file (one object per line); other fields become metadata."""
    file = Path(path)
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(read_text(file).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DesignError(f"{file}, line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DesignError(f"{file}, line {number}: expected a JSON object")
        rows.append(row)
    return _from_rows(rows, text_field, category_field, source or file.stem, str(file))


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, without its byte-order mark if it has one; newlines kept as written.

    Raises:
        DesignError: the file cannot be read, or is not UTF-8 (naming the line and column of
            the first bad byte).
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DesignError(f"cannot read {str(file)!r}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[start : exc.start].decode("utf-8", "replace")) + 1
        raise DesignError(
            f"{file}, line {line}, column {column}: not valid UTF-8 (byte "
            f"0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from exc


def _from_rows(
    rows: list[dict[str, Any]],
    text_key: str,
    category_key: str | None,
    source: str,
    where: str,
) -> list[Request]:
    if not rows:
        return []
    available = list(rows[0])
    for key in (text_key, category_key):
        if key is not None and key not in available:
            raise DesignError(f"{where}: unknown column {key!r}; valid columns: {available}")
    texts, cats, metas = [], [], []
    for number, row in enumerate(rows, 1):
        text = row.get(text_key)
        if not isinstance(text, str) or not text.strip():
            raise DesignError(f"{where}: row {number} has no text in {text_key!r}")
        texts.append(text)
        cats.append(str(row[category_key]) if category_key and row.get(category_key) else None)
        metas.append(
            {
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in row.items()
                if k not in {text_key, category_key} and v is not None
            }
        )
    return make_requests(texts, source, cats, metas)


# ---------------------------------------------------------------------- remote datasets


def default_cache_dir() -> Path:
    """``$AFPERTURB_CACHE/datasets``, else ``~/.cache/afperturb/datasets``."""
    base = os.environ.get("AFPERTURB_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "afperturb"
    return root / "datasets"


def advbench(
    client: httpx.Client | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
) -> list[Request]:
    """AdvBench's harmful behaviours (the ``goal`` column; ``target`` kept as metadata)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file = cache / "advbench_harmful_behaviors.csv"
    if not file.is_file():
        body = _get(client, ADVBENCH_URL, params=None).text
        _write_atomic(file, body)
    rows = list(csv.DictReader(io.StringIO(file.read_text(encoding="utf-8"))))
    requests = _from_rows(rows, "goal", None, "advbench", str(file))
    return requests[:limit] if limit is not None else requests


def llm_lat(
    client: httpx.Client | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    split: str = "train",
) -> list[Request]:
    """The LLM-LAT harmful-dataset (the ``prompt`` field), as used by Sheshadri et al. 2025."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file = cache / f"llm_lat_harmful_{split}.jsonl"
    if not file.is_file():
        rows = _fetch_llm_lat(client, split)
        _write_atomic(file, "".join(json.dumps(r) + "\n" for r in rows))
    rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line]
    requests = _from_rows(rows, "prompt", None, "llm_lat", str(file))
    return requests[:limit] if limit is not None else requests


def _fetch_llm_lat(client: httpx.Client | None, split: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    offset, total = 0, None
    while total is None or offset < total:
        params = {
            "dataset": LLM_LAT_DATASET,
            "config": "default",
            "split": split,
            "offset": str(offset),
            "length": str(_PAGE),
        }
        try:
            page = _get(client, LLM_LAT_URL, params=params).json()
            total = int(page["num_rows_total"])
            batch = [item["row"] for item in page["rows"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendResponseError(f"unexpected LLM-LAT page at offset {offset}") from exc
        if not batch:
            break
        rows.extend(batch)
        offset += len(batch)
    return rows


def _get(client: httpx.Client | None, url: str, params: dict[str, str] | None) -> httpx.Response:
    own = client is None
    http = client if client is not None else httpx.Client(timeout=60.0, follow_redirects=True)
    try:
        response = http.get(url, params=params)
    except httpx.HTTPError as exc:
        raise BackendResponseError(f"could not download {url}: {exc}") from exc
    finally:
        if own:
            http.close()
    if response.status_code != 200:
        raise BackendResponseError(
            f"downloading {url} failed with HTTP {response.status_code}",
            status_code=response.status_code,
        )
    return response


def _write_atomic(file: Path, text: str) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(file.suffix + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(file)


__all__ = [
    "ADVBENCH_URL",
    "LLM_LAT_URL",
    "advbench",
    "default_cache_dir",
    "from_csv",
    "from_jsonl",
    "llm_lat",
    "make_requests",
    "read_text",
    "request_id",
    "synthetic",
]
