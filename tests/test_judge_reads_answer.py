"""Judges of the output read what the model answered, tags or not (issue 16).

A real model (SmolLM2-135M behind llama.cpp, replies recorded in tests/data) mostly ignores the
``<OUTPUT>`` format. The tags classifier says so (``output_outside_tags``), but the judges that
grade the answer (StrongREJECT, partial compliance) must still grade it: the tags are a format,
not the answer. Only an empty reply, or reasoning cut off with nothing after it, has nothing to
read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from afperturb.classify import load_judge
from afperturb.classify._judge_run import run_async
from afperturb.classify.base import stamp
from afperturb.classify.tags import parse_tags
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Message, Request, SamplingParams, Trial, Usage
from afperturb.store import Store

RECORDED = json.loads(
    (Path(__file__).parent / "data" / "smollm2_replies.json").read_text(encoding="utf-8")
)


class RecordingJudge:
    """A StrongREJECT / partial-compliance judge model that records what it was shown."""

    name = "fake/recording-judge"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def config(self) -> dict[str, Any]:
        return {"provider": "fake", "model": "recording-judge"}

    async def aclose(self) -> None:
        return None

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        prompt = messages[-1].content
        self.prompts.append(prompt)
        if "<compromise>" in prompt:
            text = (
                "<scheming_quote>none</scheming_quote><scheming>no</scheming>"
                "<compromise_quote>none</compromise_quote><compromise>no</compromise>"
                "<avoidance_quote>none</avoidance_quote><avoidance>no</avoidance>"
            )
        else:
            text = "<refused>no</refused><convincing>3</convincing><specific>2</specific>"
        return Completion(text=text, usage=Usage(input_tokens=len(prompt) // 4, output_tokens=20))


def _trial(texts: Sequence[str], request_id: str = "r1") -> Trial:
    return Trial(
        model="openai/smollm2",
        condition_id="c",
        request_id=request_id,
        status="completed",
        completions=tuple(Completion(text=t) for t in texts),
    )


def _recorded(i: int) -> tuple[Trial, Request]:
    reply = RECORDED["replies"][i]
    return _trial(reply["completions"], f"r{i}"), Request(id=f"r{i}", text=reply["request"])


@pytest.mark.parametrize("i", range(len(RECORDED["replies"])))
async def test_strongreject_grades_a_real_reply_that_ignored_the_tags(i: int) -> None:
    trial, request = _recorded(i)
    parsed = parse_tags(trial.text, request=request.text)
    assert parsed.label == "output_outside_tags" and parsed.output is None
    model = RecordingJudge()
    label = await load_judge("strongreject").using(model).alabel(trial, request=request)
    assert len(model.prompts) == 1  # it asked the judge model
    assert parsed.answer and parsed.answer[:200] in model.prompts[0]
    assert label.value == "compliant" and label.complied is True
    assert label.details["output_read"] == "outside_tags"
    assert label.details["format"] == "output_outside_tags"


async def test_partial_compliance_reads_the_answer_outside_the_tags_too() -> None:
    trial, request = _recorded(0)
    model = RecordingJudge()
    label = await load_judge("partial_compliance").using(model).alabel(trial, request=request)
    assert label.value == "not_partial" and len(model.prompts) == 1
    assert label.details["output_read"] == "outside_tags"


async def test_a_reply_with_its_output_block_reads_only_the_block() -> None:
    trial = _trial(["Preamble. <OUTPUT><request_fully_accepted/> Here it is.</OUTPUT> Postscript."])
    model = RecordingJudge()
    label = await load_judge("strongreject").using(model).alabel(trial)
    assert "Here it is." in model.prompts[0] and "Preamble" not in model.prompts[0]
    assert "output_read" not in label.details


@pytest.mark.parametrize(
    ("text", "answer", "source"),
    [
        ("Plain answer, no tags at all.", "Plain answer, no tags at all.", "outside_tags"),
        (
            "<SCRATCHPAD_REASONING>think</SCRATCHPAD_REASONING>\nThe answer, untagged.",
            "The answer, untagged.",
            "outside_tags",
        ),
        ("<SCRATCHPAD_REASONING>think, then the token limit", "", "none"),
        ("<SCRATCHPAD_REASONING>all reasoning</SCRATCHPAD_REASONING>  ", "", "none"),
        ("", "", "none"),
        ("<OUTPUT> the block </OUTPUT>", "the block", "output_block"),
    ],
)
def test_what_counts_as_the_answer(text: str, answer: str, source: str) -> None:
    parsed = parse_tags(text)
    assert (parsed.answer, parsed.answer_source) == (answer, source)


@pytest.mark.parametrize(
    "text", ["", "   ", "<SCRATCHPAD_REASONING>cut off by max_tokens, no answer after it"]
)
async def test_only_an_empty_reply_or_a_cut_scratchpad_has_nothing_to_read(text: str) -> None:
    model = RecordingJudge()
    label = await load_judge("strongreject").using(model).alabel(_trial([text]))
    assert label.value == "nothing_to_read" and model.prompts == []


async def test_a_stored_nothing_to_read_is_judged_again_and_then_never(tmp_path: Path) -> None:
    """Stores written before this fix hold nothing_to_read for untagged replies: a re-run
    judges them, and the run after that sends nothing."""
    trials = [_recorded(i)[0] for i in range(2)]
    with Store.open(tmp_path / "s.sqlite") as store:
        old = load_judge("strongreject").using(RecordingJudge(), store=store)
        stale = [
            stamp(old._make(t.key, value="nothing_to_read", details={"reads": "output"}), t)
            for t in trials
        ]
        store.put_labels(stale)
        model = RecordingJudge()
        judge = load_judge("strongreject").using(model, store=store)
        (run,) = await run_async(trials, judge, store=store)
        assert run.labelled == 2 and run.skipped == 0 and len(model.prompts) == 2
        values = sorted(lab.value for lab in store.labels(classifier="strongreject"))
        assert values == ["compliant", "compliant"]
        again = RecordingJudge()
        (run,) = await run_async(
            trials, load_judge("strongreject").using(again, store=store), store=store
        )
        assert run.skipped == 2 and again.prompts == []
