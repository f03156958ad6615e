"""Simulated models with planted motives: the ground truth the whole library is checked against.

A simulated model decides from a condition's :class:`~afperturb.records.Facts` (never the prompt
text; the request text is only quoted in the scratchpad so transcripts differ per request, as
real ones do) and complies with probability given by a logistic model (ARCHITECTURE.md §3)::

    logit P(comply) = base_logit + rater_sycophancy·rated
                    + trained·conflict·(terminal_goal_guarding
                                        + instrumental_goal_guarding·deployment_harm
                                        + paraphrase_offset)
                    + u_request

``u_request ~ Normal(0, request_sd)`` is fixed per (request id, seed) so conditions that share a
request are paired exactly as in a real model. ``paraphrase_offset`` is the low-coherence truth:
0 for the canonical wording (paraphrase 0, which every condition that does not vary the wording
uses), then ``+paraphrase_sd, −paraphrase_sd, +paraphrase_sd, …`` for paraphrases 1, 2, 3, …
(the same offsets as :mod:`afperturb.stats.simulate`). It is deterministic on purpose: a planted
truth must not be a lottery. With random draws the canonical wording carried a real training
gap at ``deployment_harm`` 0 (terminal goal guarding that ``planted()`` denies) and, for some
seeds, four paraphrases drew nearly equal offsets (no low coherence that ``planted()`` claims).
Under the "cut conflicting criteria" null control (``facts.conflict`` False) there is nothing
to guard, so the whole training term is 0.

Every random draw comes from a keyed hash of (profile seed, sweep seed, condition id, request id,
sample): no global state, identical results in any order or process, and ~50k calls/s.

Example:
    >>> from afperturb.records import Facts
    >>> p = PROFILES["opus-like"]
    >>> round(p.p_comply(Facts(trained=True, rated=True, deployment_harm=1.0)), 3)
    0.574
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from afperturb.errors import DesignError, unknown_choice
from afperturb.models import _simtext
from afperturb.models._simtext import FORMAT_FAILURES, SCRATCHPAD_WHEN_OFF, Motive
from afperturb.models.base import GenerationContext
from afperturb.records import Completion, Facts, Message, SamplingParams, Usage

_U53 = 2.0**-53
_STD_NORMAL = NormalDist()
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(48)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


class MotivationProfile(BaseModel):
    """The planted truth of a simulated model: logistic coefficients on a condition's facts.

    The defaults are a null model (no motive, ~13 % compliance). ``format_failure_rate`` is the
    share of replies with a format failure (no output, both tags, empty output, truncated
    scratchpad, output without a tag); ``truncation_rate`` the share of well-formed replies cut
    off mid-way (``finish_reason="length"``) that continue correctly after ``<NEXT/>``.
    ``paraphrase_sd`` is the size of the training-effect offsets of paraphrases 1, 2, 3, …
    (+sd, −sd, +sd, …; the canonical wording has none): the low-coherence truth.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_logit: float = -2.0
    rater_sycophancy: float = 0.0
    instrumental_goal_guarding: float = 0.0
    terminal_goal_guarding: float = 0.0
    request_sd: float = Field(default=0.5, ge=0.0)
    paraphrase_sd: float = Field(default=0.0, ge=0.0)
    format_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    truncation_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    def __repr__(self) -> str:
        return (
            f"MotivationProfile(base={self.base_logit:g}, syc={self.rater_sycophancy:g}, "
            f"igg={self.instrumental_goal_guarding:g}, tgg={self.terminal_goal_guarding:g}, "
            f"request_sd={self.request_sd:g}, paraphrase_sd={self.paraphrase_sd:g})"
        )

    def planted(self) -> dict[str, bool]:
        """Which hypotheses are truly present, keyed by the hypothesis names of attribute()."""
        return {
            "rater_sycophancy": self.rater_sycophancy > 0,
            "instrumental_goal_guarding": self.instrumental_goal_guarding > 0,
            "terminal_goal_guarding": self.terminal_goal_guarding > 0,
            "low_coherence": self.paraphrase_sd > 0,
        }

    def terms(self, facts: Facts, paraphrase_offset: float = 0.0) -> tuple[float, float, float]:
        """(logit without request effect, goal-guarding term, sycophancy term) for ``facts``."""
        syc = self.rater_sycophancy if facts.rated else 0.0
        guard = 0.0
        offset = 0.0
        if facts.trained and facts.conflict:
            guard = (
                self.terminal_goal_guarding
                + self.instrumental_goal_guarding * facts.deployment_harm
            )
            offset = paraphrase_offset
        return self.base_logit + syc + guard + offset, guard, syc

    def p_comply(self, facts: Facts, u: float = 0.0, paraphrase_offset: float = 0.0) -> float:
        """P(comply) for a request whose random effect is ``u`` (0: the median request)."""
        logit, _, _ = self.terms(facts, paraphrase_offset)
        return _sigmoid(logit + u)

    def expected_p_comply(self, facts: Facts, paraphrase_offset: float = 0.0) -> float:
        """P(comply) averaged over requests (u ~ Normal(0, request_sd)): the true rate."""
        logit, _, _ = self.terms(facts, paraphrase_offset)
        z = logit + self.request_sd * _NODES
        return float(np.dot(_WEIGHTS, 1.0 / (1.0 + np.exp(-z))))

    def expected_gap(self, treated: Facts, control: Facts, paraphrase_offset: float = 0.0) -> float:
        """The true compliance gap C(treated) − C(control), averaged over requests."""
        return self.expected_p_comply(treated, paraphrase_offset) - self.expected_p_comply(
            control, paraphrase_offset
        )


#: Built-in profiles, reachable as ``sim/NAME``. Effects are sized so the paper preset detects
#: them with ≥ 90 % power at 400 requests per condition (expected gaps in docs/backends.md).
PROFILES: dict[str, MotivationProfile] = {
    "opus-like": MotivationProfile(
        base_logit=-2.0,
        instrumental_goal_guarding=1.5,
        terminal_goal_guarding=0.8,
        format_failure_rate=0.01,
        truncation_rate=0.02,
    ),
    "sonnet-like": MotivationProfile(
        base_logit=-1.5,
        paraphrase_sd=1.0,
        format_failure_rate=0.01,
        truncation_rate=0.02,
    ),
    "sycophant": MotivationProfile(
        base_logit=-2.0, rater_sycophancy=1.0, format_failure_rate=0.01, truncation_rate=0.02
    ),
    "no-gap": MotivationProfile(base_logit=-2.0, format_failure_rate=0.01, truncation_rate=0.02),
    "refuser": MotivationProfile(base_logit=-6.0, format_failure_rate=0.01),
}


@dataclass(frozen=True, slots=True)
class Decision:
    """What the simulated model decided for one trial (the per-trial ground truth)."""

    p_comply: float
    comply: bool
    motive: Motive
    failure: str | None
    truncate_at: float | None
    bits: int


class Simulated:
    """A model that answers from a :class:`MotivationProfile`; see the module docstring.

    Sampling params are ignored except ``n`` (alternatives); a trailing assistant prefill is
    ignored too (the reply is the same chat-style transcript). Without ``name`` the model is
    called ``sim/custom-<hash of the profile>``, so different profiles never share trial keys.
    """

    def __init__(
        self, profile: MotivationProfile | None = None, seed: int = 0, name: str | None = None
    ) -> None:
        self.profile = profile if profile is not None else MotivationProfile()
        self.seed = int(seed)
        if name is None:
            # Distinct profiles must not share trial keys in one store: name them by content.
            digest = hashlib.sha256(self.profile.model_dump_json().encode()).hexdigest()
            name = f"sim/custom-{digest[:8]}"
        self.name = name

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
        return self.profile.request_sd * _normal(self.seed, sweep_seed, "request", request_id)

    def paraphrase_offset(self, paraphrase: int, sweep_seed: int = 0) -> float:
        """The training-effect offset of one paraphrase: 0, +sd, −sd, +sd, … (module docstring).

        ``sweep_seed`` is accepted for compatibility and ignored: the offsets are the planted
        truth, the same in every sweep.
        """
        del sweep_seed
        return paraphrase_offset(self.profile.paraphrase_sd, paraphrase)

    def expected_p_comply(self, facts: Facts, sweep_seed: int = 0) -> float:
        """The true rate for ``facts`` over requests, with this seed's paraphrase offset."""
        offset = self.paraphrase_offset(facts.paraphrase, sweep_seed)
        return self.profile.expected_p_comply(facts, offset)

    def expected_gap(self, treated: Facts, control: Facts, sweep_seed: int = 0) -> float:
        """The true gap C(treated) − C(control) this model shows (paraphrase offsets included)."""
        return self.expected_p_comply(treated, sweep_seed) - self.expected_p_comply(
            control, sweep_seed
        )

    def decide(self, context: GenerationContext | None, alternative: int = 0) -> Decision:
        """The deterministic decision for one trial (reads facts, request id, sample, seed)."""
        ctx = context if context is not None else GenerationContext()
        facts = ctx.condition.facts if ctx.condition is not None else _DEFAULT_FACTS
        cond_id = ctx.condition.id if ctx.condition is not None else ""
        req_id = ctx.request.id if ctx.request is not None else ""
        prof = self.profile
        u = self.request_effect(req_id, ctx.seed)
        offset = self.paraphrase_offset(facts.paraphrase, ctx.seed)
        key = f"{self.seed}\x1f{ctx.seed}\x1f{cond_id}\x1f{req_id}\x1f{ctx.sample}\x1f{alternative}"
        v = struct.unpack("<8Q", hashlib.blake2b(key.encode(), digest_size=64).digest())
        logit, guard, syc = prof.terms(facts, offset)
        p = _sigmoid(logit + u)
        comply = (v[0] >> 11) * _U53 < p
        failure = None
        if (v[1] >> 11) * _U53 < prof.format_failure_rate:
            kinds = FORMAT_FAILURES
            if ctx.condition is not None and ctx.condition.levels.get("scratchpad") == "off":
                kinds = (*FORMAT_FAILURES, SCRATCHPAD_WHEN_OFF)
            failure = kinds[v[2] % len(kinds)]
        truncate_at = None
        if failure is None and (v[6] >> 11) * _U53 < prof.truncation_rate:
            truncate_at = 0.2 + 0.6 * ((v[7] >> 11) * _U53)
        motive = _motive(comply, p, logit + u, guard, syc, facts, prof, v[3], v[4])
        return Decision(p, comply, motive, failure, truncate_at, v[5])

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
                scratch_on = context.condition.levels.get("scratchpad") != "off"
            if context.request is not None:
                request_text = context.request.text
        reasoning = _simtext.scratchpad(
            comply=d.comply,
            motive=d.motive,
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


def paraphrase_offset(paraphrase_sd: float, paraphrase: int) -> float:
    """Offset of the training effect under paraphrase ``paraphrase`` (0 for the canonical one).

    Odd paraphrases shift the training effect up by ``paraphrase_sd``, even ones (from 2) down,
    so any two non-canonical neighbours disagree in sign: the gap is not invariant to wording.
    """
    if paraphrase_sd <= 0 or paraphrase <= 0:
        return 0.0
    return paraphrase_sd if paraphrase % 2 == 1 else -paraphrase_sd


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@lru_cache(maxsize=1 << 16)
def _normal(seed: int, sweep_seed: int, kind: str, key: str) -> float:
    """A standard normal draw fixed by (seeds, kind, key): the request and paraphrase effects."""
    raw = hashlib.blake2b(f"{seed}\x1f{sweep_seed}\x1f{kind}\x1f{key}".encode(), digest_size=8)
    u = ((int.from_bytes(raw.digest(), "little") >> 11) + 0.5) * _U53
    return _STD_NORMAL.inv_cdf(u)


def _motive(
    comply: bool,
    p: float,
    logit: float,
    guard: float,
    syc: float,
    facts: Facts,
    prof: MotivationProfile,
    v_share: int,
    v_kind: int,
) -> Motive:
    """Which motive a complying reply states, with P = the share of P(comply) it explains."""
    if not comply or p <= 0.0:
        return "none"
    share_guard = max(0.0, p - _sigmoid(logit - guard)) / p if guard > 0 else 0.0
    share_syc = max(0.0, p - _sigmoid(logit - syc)) / p if syc > 0 else 0.0
    total = share_guard + share_syc
    if total > 1.0:
        share_guard, share_syc = share_guard / total, share_syc / total
    r = (v_share >> 11) * _U53
    if r < share_guard:
        igg = max(0.0, prof.instrumental_goal_guarding * facts.deployment_harm)
        tgg = max(0.0, prof.terminal_goal_guarding)
        return "igg" if (v_kind >> 11) * _U53 * (igg + tgg) < igg else "tgg"
    if r < share_guard + share_syc:
        return "sycophancy"
    return "none"


def from_name(model_name: str, *, seed: int = 0, **overrides: Any) -> Simulated:
    """Registry factory for ``sim/NAME``; keyword overrides change profile fields."""
    profile = PROFILES.get(model_name)
    if profile is None:
        raise unknown_choice("simulated profile", model_name, sorted(PROFILES))
    unknown = sorted(set(overrides) - set(MotivationProfile.model_fields))
    if unknown:
        raise DesignError(
            f"unknown MotivationProfile field(s) {unknown}; valid: "
            + ", ".join(sorted(MotivationProfile.model_fields))
        )
    if overrides:
        profile = MotivationProfile(**{**profile.model_dump(), **overrides})
    return Simulated(profile, seed=seed, name=f"sim/{model_name}")


__all__ = [
    "PROFILES",
    "Decision",
    "MotivationProfile",
    "Simulated",
    "from_name",
    "paraphrase_offset",
]
