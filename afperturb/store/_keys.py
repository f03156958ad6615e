"""Cache keys: what changes a model's output, hashed; secrets scrubbed before anything is hashed."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from afperturb.records import (
    Message,
    SamplingParams,
)

#: Config keys never written anywhere, whatever a backend's ``config()`` returns.
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "secret",
        "password",
        "authorization",
        "headers",
        "token",
        "access_token",
        "x-api-key",
    }
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


#: sha256 of long message texts (system prompts repeat across every request of a condition).
_TEXT_SHAS: dict[str, str] = {}


def _text_sha(text: str) -> str:
    """:func:`_sha`, remembered for long texts (a dict probe instead of hashing ~3 kB)."""
    if len(text) < 512:
        return _sha(text)
    found = _TEXT_SHAS.get(text)
    if found is None:
        found = _sha(text)
        if len(_TEXT_SHAS) >= 4096:
            _TEXT_SHAS.clear()
        _TEXT_SHAS[text] = found
    return found


def scrub(config: Mapping[str, Any]) -> dict[str, Any]:
    """Drop secret-looking entries (keys, auth headers) from a config, recursively."""
    clean: dict[str, Any] = {}
    for name, value in config.items():
        if str(name).lower() in _SECRET_KEYS:
            continue
        clean[name] = scrub(value) if isinstance(value, Mapping) else value
    return clean


def model_hash(config: Mapping[str, Any]) -> str:
    """Hash of a model's (scrubbed) config: which backend and settings produced a completion."""
    return _sha(canonical_json(scrub(config)))


def cache_key(
    model_config: Mapping[str, Any] | str,
    messages: Sequence[Message],
    params: SamplingParams,
    sample: int,
    seed: int = 0,
) -> str:
    """The content address of one generation.

    Only what changes the output goes in: the model's config (or its :func:`model_hash`), the
    messages including any continuation history, the sampling params, the sample index and the
    sweep seed (simulated models draw from it). Never timeouts, concurrency or keys.
    """
    mh = model_config if isinstance(model_config, str) else model_hash(model_config)
    head = f"{mh}|{int(sample)}|{int(seed)}|{_params_json(params)}"
    rest: Sequence[Message] = messages
    h = None
    if messages and len(messages[0].content) >= _PREFIX_MIN_CHARS:
        # The first message (the per-condition system prompt, ~3 kB) is the same for every
        # request of a condition: hash it once and copy the hasher's state. The key is byte for
        # byte the same as hashing everything (a test checks it); only the per-request part
        # (user turn, continuations) is hashed per trial. Hashing >2 kB also releases the GIL,
        # which hands it to the store's writer thread in the middle of the event loop's work.
        first = messages[0]
        memo = (head, first.role, first.content)
        base = _PREFIX_HASHERS.get(memo)
        if base is None:
            base = _hasher(head, (first,))
            if len(_PREFIX_HASHERS) >= _PREFIX_MAX:
                _PREFIX_HASHERS.clear()
            _PREFIX_HASHERS[memo] = base
        h = base.copy()
        rest = messages[1:]
    if h is None:
        h = _hasher(head, ())
    for m in rest:
        _update(h, m)
    return str(h.hexdigest())


#: Hasher states after (model, sample, seed, params, first message), by those inputs.
_PREFIX_HASHERS: dict[tuple[str, str, str], Any] = {}
_PREFIX_MAX = 4096
_PREFIX_MIN_CHARS = 512


def _hasher(head: str, messages: Sequence[Message]) -> Any:
    h = hashlib.sha256(head.encode())
    for m in messages:
        _update(h, m)
    return h


def _update(h: Any, m: Message) -> None:
    # Length-prefixed (unambiguous) and without JSON: this runs once per turn of every trial.
    data = m.content.encode("utf-8")
    h.update(f"\n{m.role}:{len(data)}:".encode())
    h.update(data)


@functools.lru_cache(maxsize=256)
def _params_json(params: SamplingParams) -> str:
    # Serialising the params is most of a key's cost; a sweep uses one or two of them.
    return canonical_json(params.model_dump(mode="json"))


def run_variant(
    model_config: Mapping[str, Any] | str,
    *,
    seed: int,
    params: SamplingParams,
    max_turns: int,
    template_hashes: Mapping[str, str] | None = None,
) -> str:
    """Which configuration produced a trial: part of its key (``Trial.variant``).

    Everything that can change a completion but is not already in the trial's grid position
    (model, condition, request, sample): the model's scrubbed config (``base_url`` included),
    the sweep seed, the sampling params, the continuation limit and the scenario's template
    hashes. Two sweeps that differ in any of them store their trials side by side; a resumed
    sweep with the same configuration finds its own trials again.
    """
    mh = model_config if isinstance(model_config, str) else model_hash(model_config)
    payload = canonical_json(
        {
            "model": mh,
            "seed": int(seed),
            "params": params.model_dump(mode="json"),
            "max_turns": int(max_turns),
            "templates": dict(template_hashes or {}),
        }
    )
    return "v" + _sha(payload)[:12]


def manifest_variant(manifest: Mapping[str, Any]) -> str:
    """:func:`run_variant` of a stored run manifest (old stores' manifests have every input)."""
    if manifest.get("variant"):
        return str(manifest["variant"])
    return run_variant(
        manifest.get("model_config", {}),
        seed=int(manifest.get("seed", 0)),
        params=SamplingParams.model_validate(manifest.get("params") or {}),
        max_turns=int(manifest.get("max_turns", 4)),
        template_hashes=manifest.get("template_hashes") or {},
    )
