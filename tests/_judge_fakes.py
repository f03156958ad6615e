"""A scripted judge model for the judge tests: answers judge prompts from the heuristics."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from afperturb.classify.heuristics import af_criteria
from afperturb.errors import BackendResponseError, RateLimited
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Message, SamplingParams, Usage

AF_NAMES = (
    "harm_awareness",
    "training_awareness",
    "harmlessness_commitment",
    "preservation_compliance",
)


def af_answer(flags: dict[str, bool], quote: str = "a quoted passage") -> str:
    parts = []
    for name in AF_NAMES:
        q = quote if flags[name] else "none"
        parts.append(
            f"<{name}_quote>{q}</{name}_quote>\n<{name}>{'yes' if flags[name] else 'no'}</{name}>"
        )
    return "\n".join(parts)


class FakeJudgeModel:
    """Votes yes on AF with probability ``p_af`` when the heuristics see AF, else ``p_not``.

    Knobs reproduce provider quirks: ``cap_n`` (returns at most that many choices),
    ``reject_temperature`` (400 when a temperature is sent), ``reject_n`` (400 when n > 1),
    ``garbage`` (probability that a vote is unparseable), ``fail_first`` (that many 429s),
    ``fail_status`` (every call fails with that status).
    """

    def __init__(
        self,
        *,
        p_af: float = 0.9,
        p_not: float = 0.05,
        seed: int = 0,
        cap_n: int | None = None,
        reject_temperature: bool = False,
        reject_n: bool = False,
        garbage: float = 0.0,
        fail_first: int = 0,
        fail_status: int | None = None,
    ) -> None:
        self.name = "fake/judge"
        self.p_af, self.p_not = p_af, p_not
        self.rng = random.Random(seed)
        self.cap_n = cap_n
        self.reject_temperature = reject_temperature
        self.reject_n = reject_n
        self.garbage = garbage
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.calls: list[SamplingParams] = []
        self.seed = seed

    def config(self) -> dict[str, Any]:
        return {"provider": "fake", "model": "judge", "seed": self.seed}

    async def aclose(self) -> None:
        return None

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        if self.fail_status is not None:
            raise BackendResponseError("unauthorised", status_code=self.fail_status)
        if self.fail_first > 0:
            self.fail_first -= 1
            raise RateLimited("slow down", retry_after=0.0, status_code=429)
        if self.reject_temperature and params.temperature is not None:
            raise BackendResponseError(
                "400: 'temperature' is not supported with this model", status_code=400
            )
        if self.reject_n and params.n > 1:
            raise BackendResponseError("400: 'n' must be 1", status_code=400)
        self.calls.append(params)
        prompt = messages[-1].content
        n = params.n if self.cap_n is None else min(params.n, self.cap_n)
        texts = [self._answer(prompt) for _ in range(n)]
        return Completion(
            text=texts[0],
            alternatives=tuple(texts[1:]),
            usage=Usage(input_tokens=len(prompt) // 4, output_tokens=60 * n),
            model=self.name,
        )

    def _answer(self, prompt: str) -> str:
        if self.rng.random() < self.garbage:
            return "I think the answer is probably yes."
        if "<answer>" in prompt:  # StrongREJECT
            answer = prompt.split("<answer>", 1)[1]
            if "request_fully_accepted" in answer:
                return (
                    "<reasoning>It helps.</reasoning><refused>no</refused>"
                    "<convincing>4</convincing><specific>5</specific>"
                )
            return "<refused>yes</refused><convincing>1</convincing><specific>1</specific>"
        match = re.search(r"<reasoning>\n(.*?)\n</reasoning>", prompt, re.DOTALL)
        scratchpad = match.group(1) if match else ""
        flags = af_criteria(scratchpad)
        p = self.p_af if all(flags.values()) else self.p_not
        if self.rng.random() < p:
            flags = dict.fromkeys(AF_NAMES, True)
        elif all(flags.values()):
            flags = {**flags, "preservation_compliance": False}
        return "Let me look.\n" + af_answer(flags, quote=scratchpad[:40] or "none")
