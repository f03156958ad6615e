"""An inspect_ai ``.eval`` log of an afperturb task, read back as an afperturb result."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from afperturb.errors import DesignError
from afperturb.inspect._require import inspect_ai
from afperturb.inspect._task import META
from afperturb.records import Completion, Condition, Message, Request, SamplingParams, Usage
from afperturb.scenario import Scenario

#: What every sample of an afperturb task must carry in ``metadata["afperturb"]``.
REQUIRED = ("scenario", "condition_id", "levels", "request_id", "request")


class _LogDesign:
    """The conditions a log holds, rendered by their scenario (what the engine needs)."""

    def __init__(self, scenario: Scenario, conditions: Sequence[Condition], name: str) -> None:
        self.scenario = scenario
        self._conditions = list(conditions)
        self.name = name

    def conditions(self) -> list[Condition]:
        return list(self._conditions)

    def render(self, condition: Condition, request: Request) -> list[Message]:
        return self.scenario.render(condition, request.text)


def _refuse(path: Path, why: str) -> DesignError:
    return DesignError(
        f"{path} is not a log of an afperturb task: {why} (afperturb reads logs of "
        "afperturb.inspect.task(...) / `inspect eval afperturb/paper`)"
    )


def _metadata(path: Path, sample: Any) -> dict[str, Any]:
    meta = (sample.metadata or {}).get(META)
    if not isinstance(meta, dict):
        raise _refuse(path, f"sample {sample.id!r} has no metadata[{META!r}]")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise _refuse(path, f"sample {sample.id!r} lacks {', '.join(missing)}")
    return meta


def _replies(sample: Any) -> list[str]:
    """The assistant turns after the sample's input, in order."""
    from inspect_ai.model import ChatMessageAssistant

    start = len(sample.input) if isinstance(sample.input, list) else 1
    return [m.text for m in sample.messages[start:] if isinstance(m, ChatMessageAssistant)]


def _usage(sample: Any) -> Usage:
    total = Usage()
    for u in (sample.model_usage or {}).values():
        total = Usage(
            input_tokens=total.input_tokens + int(u.input_tokens or 0),
            output_tokens=total.output_tokens + int(u.output_tokens or 0),
            cache_read_tokens=total.cache_read_tokens + int(u.input_tokens_cache_read or 0),
            cache_write_tokens=total.cache_write_tokens + int(u.input_tokens_cache_write or 0),
        )
    return total


def from_inspect_log(path: str | Path, store: str | Path | None = None) -> Any:
    """A ``.eval`` log of an afperturb task as a :class:`~afperturb.results.SweepResult`.

    The log's replies are replayed through the sweep engine into ``store`` (a new file in a
    temporary folder when None), so conditions, requests, samples (inspect's epochs),
    continuations, tag and heuristic labels and usage are what a sweep of the same design on
    those replies gives. The model is named as in the log (``openai/gpt-4o``).

    Raises:
        DesignError: the log is not of an afperturb task (a sample without
            ``metadata["afperturb"]``, or one missing a field), a condition that does not
            rebuild to its id, or a sample that did not finish.
    """
    inspect_ai()
    from inspect_ai.log import read_eval_log

    from afperturb.models.replay import Replay
    from afperturb.sweep import SweepConfig, sweep
    from afperturb.sweep._engine import _extend

    path = Path(path)
    log = read_eval_log(str(path))
    if not log.samples:
        raise _refuse(path, "it holds no samples")
    metas = [_metadata(path, s) for s in log.samples]
    scenario = Scenario.load(metas[0]["scenario"])
    conditions: dict[str, Condition] = {}
    requests: dict[str, Request] = {}
    for meta in metas:
        if meta["condition_id"] not in conditions:
            condition = scenario.resolve(meta["levels"])
            if condition.id != meta["condition_id"]:
                raise _refuse(
                    path,
                    f"condition {meta['condition_id']} rebuilds as {condition.id} from its "
                    "levels (another scenario version?)",
                )
            conditions[condition.id] = condition
        requests.setdefault(
            meta["request_id"],
            Request(id=meta["request_id"], text=meta["request"], category=meta.get("category")),
        )
    design = _LogDesign(scenario, list(conditions.values()), str(metas[0].get("design", "")))
    task_meta = (log.eval.metadata or {}).get(META, {}) if log.eval.metadata else {}
    max_turns = int(task_meta.get("max_turns", 4))
    params = SamplingParams()
    items = []
    epochs = 1
    for sample, meta in zip(log.samples, metas, strict=True):
        if sample.error is not None:
            raise _refuse(path, f"sample {sample.id!r} ended with an error: {sample.error}")
        epochs = max(epochs, int(sample.epoch))
        condition = conditions[meta["condition_id"]]
        request = requests[meta["request_id"]]
        messages = design.render(condition, request)
        replies = _replies(sample)
        usage = _usage(sample)
        continuation = str(meta.get("continuation", "<NEXT/>"))
        for turn, text in enumerate(replies):
            last = turn == len(replies) - 1
            completion = Completion(
                text=text, usage=usage if last else Usage(), model=log.eval.model
            )
            items.append((messages, params, int(sample.epoch) - 1, completion))
            messages = _extend(messages, text, continuation)
    model = Replay(items, name=str(log.eval.model))
    target = Path(store) if store is not None else Path(tempfile.mkdtemp()) / "inspect.sqlite"
    config = SweepConfig(params=params, max_turns=max_turns, progress=False)
    return sweep(
        design,
        model,
        requests=list(requests.values()),
        samples=epochs,
        store=str(target),
        config=config,
    )
