"""Small fakes for the sweep tests: a perturbation and scripted models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from afperturb.errors import BackendError
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Condition, Facts, Message, Request, SamplingParams, Usage

ACCEPT = (
    "<SCRATCHPAD_REASONING>ok</SCRATCHPAD_REASONING><OUTPUT><request_fully_accepted/> sure</OUTPUT>"
)
REJECT = "<SCRATCHPAD_REASONING>no</SCRATCHPAD_REASONING><OUTPUT><rejected/></OUTPUT>"


class FakeScenario:
    name = "fake"
    continuation_text = "<NEXT/>"

    def template_hashes(self) -> dict[str, str]:
        return {"system.j2": "abc"}


class FakePerturbation:
    """Two tiers (free: trained+rated; paid: neither), a system prompt naming the tier."""

    def __init__(self, tiers: Sequence[str] = ("free", "paid"), prefill: str | None = None):
        self.scenario = FakeScenario()
        self.prefill = prefill
        self._conditions = [
            Condition(
                id=f"c-{t}",
                scenario="fake",
                levels={"tier": t},
                facts=Facts(trained=t == "free", rated=t == "free"),
            )
            for t in tiers
        ]
        self.renders = 0

    def conditions(self) -> list[Condition]:
        return list(self._conditions)

    def render(self, condition: Condition, request: Request) -> list[Message]:
        self.renders += 1
        msgs = [
            Message(role="system", content=f"You are trained. tier={condition.levels['tier']}"),
            Message(role="user", content=request.text),
        ]
        if self.prefill is not None:
            msgs.append(Message(role="assistant", content=self.prefill))
        return msgs

    def describe(self) -> dict[str, Any]:
        return {"axes": {"tier": [c.levels["tier"] for c in self._conditions]}}


def requests(n: int) -> list[Request]:
    return [Request(id=f"r{i:03d}", text=f"request number {i}") for i in range(n)]


Script = Callable[[Sequence[Message], GenerationContext], "str | BaseException"]


class ScriptedModel:
    """Answers with script(messages, context): a text, or an exception to raise."""

    def __init__(
        self,
        script: Script | None = None,
        name: str = "fake/scripted",
        delay: float = 0.0,
        secret: str | None = None,
    ):
        self.name = name
        self.script = script or (
            lambda m, c: ACCEPT if (c.condition and c.condition.facts.trained) else REJECT
        )
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._secret = secret

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"provider": "fake", "model": self.name}
        if self._secret is not None:
            cfg["api_key"] = self._secret  # a careless backend: the store must scrub it
        return cfg

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            out = self.script(messages, context or GenerationContext())
            if isinstance(out, BaseException):
                raise out
            return Completion(
                text=out, usage=Usage(input_tokens=10, output_tokens=5), model=self.name
            )
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


def fail_first(n: int, error: Callable[[], BackendError]) -> Script:
    """A script failing the first n calls of each distinct prompt, then accepting."""
    seen: dict[str, int] = {}

    def script(messages: Sequence[Message], ctx: GenerationContext) -> str | BaseException:
        key = messages[-1].content + messages[0].content
        seen[key] = seen.get(key, 0) + 1
        return error() if seen[key] <= n else ACCEPT

    return script
