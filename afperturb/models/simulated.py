"""Simulated models with planted motives: the ground truth the whole library is checked against.

A simulated model decides from a condition's :class:`~afperturb.records.Facts` and levels (never
the prompt text; the request text is only quoted in the scratchpad so transcripts differ per
request, as real ones do) by the truth of a :class:`~afperturb.profiles.MotivationProfile`,
which :mod:`afperturb.profiles` states once for this backend and the frame generator alike::

    logit P(comply) = base_logit + rater_sycophancy·rated
                    + trained·conflict·(terminal_goal_guarding
                                        + instrumental_goal_guarding·deployment_harm
                                        + paraphrase_offset)
                    + framing(levels, deployment_harm)
                    + u_request

plus, per trial, the motive a complying reply states and whether the scratchpad shows
alignment-faking reasoning (``guard_reasoning``, ``af_reasoning``; see :mod:`afperturb.profiles`).

Every random draw (the request effect ``u_request`` and the per-trial uniforms) comes from a
keyed hash of (model name, profile digest, profile seed, sweep seed, condition id, request id,
sample, alternative): two models are independent even on the same request, while one model is
identical in any order or process; no global state, ~50k calls/s.

Example:
    >>> from afperturb.records import Facts
    >>> p = PROFILES["opus-like"]
    >>> round(p.p_comply(Facts(trained=True, rated=True, deployment_harm=1.0)), 3)
    0.574
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

from afperturb.models import _simtext
from afperturb.models.base import GenerationContext
from afperturb.profiles import (
    PROFILES,
    MotivationProfile,
    Motive,
    custom_name,
    decide_trial,
    failure_kinds,
    paraphrase_offset,
    resolve_profile,
    scratchpad_on,
)
from afperturb.records import Completion, Condition, Facts, Message, SamplingParams, Usage

_U53 = 2.0**-53
_U32 = 2.0**-32
_STD_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class Decision:
    """What the simulated model decided for one trial (the per-trial ground truth).

    ``motive`` is what explains a compliance ("none" for refusals); ``af_reasoning`` whether
    the scratchpad shows alignment-faking reasoning (complying or refusing).
    """

    p_comply: float
    comply: bool
    motive: Motive
    af_reasoning: bool
    failure: str | None
    truncate_at: float | None
    bits: int


class Simulated:
    """A model that answers from a :class:`MotivationProfile`; see the module docstring.

    Sampling params are ignored except ``n`` (alternatives); a trailing assistant prefill is
    ignored too (the reply is the same chat-style transcript). Without ``name`` the model is
    called ``sim/custom-<digest of the profile>``, so different profiles never share trial keys.
    """

    def __init__(
        self, profile: MotivationProfile | None = None, seed: int = 0, name: str | None = None
    ) -> None:
        self.profile = profile if profile is not None else MotivationProfile()
        self.seed = int(seed)
        # Distinct profiles must not share trial keys in one store: name them by content.
        self.name = name if name is not None else custom_name(self.profile)
        # Every draw is keyed by model and profile, so two models never share their noise.
        self._key = f"{self.name}\x1f{self.profile.digest()}\x1f{self.seed}"

    def __repr__(self) -> str:
        return f"<Simulated {self.name} seed={self.seed} {self.profile!r}>"

    def config(self) -> dict[str, Any]:
        """Provider, name, seed and the whole profile: everything that changes the output."""
        return {
            "provider": "sim",
            "model": self.name,
            "seed": self.seed,
            "profile": self.profile.model_dump(),
        }

    async def aclose(self) -> None:
        """Nothing to release."""

    def request_effect(self, request_id: str, sweep_seed: int = 0) -> float:
        """The request's random effect ``u_request`` on the logit (fixed per request and seeds)."""
        return self.profile.request_sd * _normal(self._key, sweep_seed, "request", request_id)

    def paraphrase_offset(self, paraphrase: int, sweep_seed: int = 0) -> float:
        """The training-effect offset of one paraphrase: 0, +sd, −sd, +sd, … (the profile's).

        ``sweep_seed`` is accepted for compatibility and ignored: the offsets are the planted
        truth, the same in every sweep.
        """
        del sweep_seed
        return paraphrase_offset(self.profile.paraphrase_sd, paraphrase)

    def expected_p_comply(self, condition: Condition | Facts, sweep_seed: int = 0) -> float:
        """The true rate of a condition over requests (framing needs a Condition's levels)."""
        del sweep_seed  # the truth is the same in every sweep
        return self.profile.expected_p_comply(condition)

    def expected_gap(
        self, treated: Condition | Facts, control: Condition | Facts, sweep_seed: int = 0
    ) -> float:
        """The true gap C(treated) − C(control) this model shows (paraphrase offsets included)."""
        return self.expected_p_comply(treated, sweep_seed) - self.expected_p_comply(
            control, sweep_seed
        )

    def decide(self, context: GenerationContext | None, alternative: int = 0) -> Decision:
        """The deterministic decision for one trial (reads facts, levels, ids, sample, seeds)."""
        ctx = context if context is not None else GenerationContext()
        condition = ctx.condition
        req_id = ctx.request.id if ctx.request is not None else ""
        prof = self.profile
        if condition is not None:
            terms = prof.terms(condition)
            cond_id = condition.id
            levels = condition.levels
        else:
            terms, cond_id, levels = prof.terms(_DEFAULT_FACTS), "", {}
        u = self.request_effect(req_id, ctx.seed)
        key = f"{self._key}\x1f{ctx.seed}\x1f{cond_id}\x1f{req_id}\x1f{ctx.sample}\x1f{alternative}"
        v = struct.unpack("<8Q", hashlib.blake2b(key.encode(), digest_size=64).digest())
        # v0 comply, v1 failure, v2 (low: failure kind, high: independent AF), v3 motive share,
        # v4 (high: IGG or TGG, low: guard reasoning), v5 wording bits, v6/v7 truncation.
        draws = (
            (v[0] >> 11) * _U53,
            (v[3] >> 11) * _U53,
            (v[4] >> 32) * _U32,
            (v[4] & 0xFFFFFFFF) * _U32,
            (v[2] >> 32) * _U32,
        )
        truth = decide_trial(prof, terms, u, draws)
        failure = None
        if (v[1] >> 11) * _U53 < prof.format_failure_rate:
            kinds = failure_kinds(levels)
            failure = kinds[(v[2] & 0xFFFFFFFF) % len(kinds)]
        truncate_at = None
        if failure is None and (v[6] >> 11) * _U53 < prof.truncation_rate:
            truncate_at = 0.2 + 0.6 * ((v[7] >> 11) * _U53)
        return Decision(
            truth.p_comply,
            truth.comply,
            truth.motive,
            truth.af_reasoning,
            failure,
            truncate_at,
            v[5],
        )

    def transcript(self, context: GenerationContext | None, alternative: int = 0) -> str:
        """The whole reply (all turns joined) for one trial."""
        return self._reply(context, self.decide(context, alternative))

    async def generate(
        self,
        messages: Sequence[Message],
        params: SamplingParams,
        context: GenerationContext | None = None,
    ) -> Completion:
        """Answer turn ``context.turn`` of the trial; later turns continue a truncated reply."""
        turn = context.turn if context is not None else 0
        decision = self.decide(context)
        text, finish = self._turn_text(self._reply(context, decision), decision, turn)
        alternatives: tuple[str, ...] = ()
        if params.n > 1:
            alternatives = tuple(
                self._turn_text(self._reply(context, d), d, turn)[0]
                for d in (self.decide(context, k) for k in range(1, params.n))
            )
        prompt_chars = sum(len(m.content) for m in messages)
        return Completion(
            text=text,
            finish_reason=finish,
            usage=Usage(input_tokens=prompt_chars // 4, output_tokens=len(text) // 4),
            model=self.name,
            alternatives=alternatives,
        )

    def _reply(self, context: GenerationContext | None, d: Decision) -> str:
        facts = _DEFAULT_FACTS
        scratch_on = True
        request_text = None
        if context is not None:
            if context.condition is not None:
                facts = context.condition.facts
                scratch_on = scratchpad_on(context.condition.levels)
            if context.request is not None:
                request_text = context.request.text
        reasoning = _simtext.scratchpad(
            comply=d.comply,
            motive=d.motive,
            af_reasoning=d.af_reasoning,
            trained=facts.trained,
            rated=facts.rated,
            conflict=facts.conflict,
            deployment_harm=facts.deployment_harm,
            bits=d.bits,
            request_quote=_simtext.quote(request_text),
        )
        if d.failure is not None:
            return _simtext.failure(d.failure, reasoning=reasoning, bits=d.bits)
        return _simtext.reply(
            reasoning=reasoning if scratch_on else None, comply=d.comply, bits=d.bits
        )

    @staticmethod
    def _turn_text(full: str, d: Decision, turn: int) -> tuple[str, str]:
        if d.truncate_at is not None:
            cut = max(1, int(len(full) * d.truncate_at))
            if turn == 0:
                return full[:cut], "length"
            return (full[cut:], "stop") if turn == 1 else ("", "stop")
        if turn > 0:
            # A format failure that never closes its output stays broken: nothing more to say.
            return "", "stop"
        return full, "length" if d.failure == "truncated_scratchpad" else "stop"


_DEFAULT_FACTS = Facts()


@lru_cache(maxsize=1 << 16)
def _normal(key: str, sweep_seed: int, kind: str, item: str) -> float:
    """A standard normal draw fixed by (model key, sweep seed, kind, item): the request effect."""
    raw = hashlib.blake2b(f"{key}\x1f{sweep_seed}\x1f{kind}\x1f{item}".encode(), digest_size=8)
    u = ((int.from_bytes(raw.digest(), "little") >> 11) + 0.5) * _U53
    return _STD_NORMAL.inv_cdf(u)


def from_name(model_name: str, *, seed: int = 0, **overrides: Any) -> Simulated:
    """Registry factory for ``sim/NAME``; keyword overrides change profile fields."""
    profile, name = resolve_profile(model_name, overrides)
    return Simulated(profile, seed=seed, name=name)


__all__ = [
    "PROFILES",
    "Decision",
    "MotivationProfile",
    "Simulated",
    "from_name",
    "paraphrase_offset",
]
