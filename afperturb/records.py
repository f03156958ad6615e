"""Records that cross I/O: prompts, designs, requests, completions, trials and labels.

All are frozen pydantic models with ``extra="forbid"``: a typo in a field name is an error,
not a silently ignored key. The records users build themselves (:class:`Request`,
:class:`SamplingParams`) raise a :class:`~afperturb.errors.DesignError` naming the field, the
bad value and the rule (also from ``model_validate``); the others raise pydantic's
``ValidationError``. Records written to the store carry ``schema_version`` so a later
afperturb can read (or refuse, clearly) an old store.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from afperturb.errors import invalid_fields

Role = Literal["system", "user", "assistant"]
TrialStatus = Literal["completed", "failed"]


class Record(BaseModel):
    """Base of every afperturb record: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class UserRecord(Record):
    """A record users construct: a bad field is a DesignError (field, value, rule).

    pydantic calls a custom ``__init__`` from ``model_validate`` and nested validation too, so
    every way in converts. Hot-path records (trials, completions, messages) skip this (it adds
    about a microsecond per record).
    """

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            cls = type(self)
            raise invalid_fields(cls.__name__, exc, cls.model_fields) from exc


class Message(Record):
    """One chat turn."""

    role: Role
    content: str

    def __repr__(self) -> str:
        text = self.content if len(self.content) <= 40 else self.content[:37] + "..."
        return f"<Message {self.role}: {text!r}>"


class Facts(Record):
    """What a condition *means* to the model, merged from its levels.

    The simulated models read these, never the prompt text, and the decision rules group
    conditions by them. ``conflict`` is False under the "cut conflicting criteria" null control
    (the training objective no longer conflicts with the model's values); ``paraphrase`` is the
    index of the system-prompt paraphrase, so low-coherence tests can treat it as a factor.
    """

    trained: bool = False
    rated: bool = False
    rater: Literal["human", "llm"] | None = None
    deployment_harm: float = Field(default=0.0, ge=0.0, le=1.0)
    conflict: bool = True
    paraphrase: int = Field(default=0, ge=0)


class Condition(Record):
    """One cell of a design: a level for every axis, and the facts those levels imply."""

    id: str
    scenario: str
    levels: dict[str, str]
    facts: Facts

    def __repr__(self) -> str:
        varied = ", ".join(f"{k}={v}" for k, v in sorted(self.levels.items()))
        return f"<Condition {self.id} {varied}>"


class Request(UserRecord):
    """One user request; ``text`` is data and is never evaluated as a template."""

    id: str
    text: str
    category: str | None = None
    source: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class SamplingParams(UserRecord):
    """What changes a model's output (and therefore the cache key); no timeouts here.

    ``temperature`` is at least 0 (None sends none); ``top_p`` lies in (0, 1].
    """

    temperature: float | None = Field(default=1.0, ge=0)
    max_tokens: int = Field(default=4096, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: tuple[str, ...] = ()
    n: int = Field(default=1, ge=1)
    reasoning_tokens: int | None = Field(default=None, ge=0)
    prefill: str | None = None
    seed: int | None = None


class Usage(Record):
    """Token counts as the provider reported them, in one convention for every provider.

    ``input_tokens`` counts every prompt token, cached or not; ``cache_read_tokens`` and
    ``cache_write_tokens`` are the parts of it read from and written to the provider's prompt
    cache (Anthropic reports them beside ``input_tokens``: they are added in; OpenAI's
    ``cached_tokens`` are already part of ``prompt_tokens`` and it bills no writes). So
    ``input_tokens - cache_read_tokens - cache_write_tokens`` is what was billed as plain input.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the plain input price."""
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)


class Completion(Record):
    """One model answer to one request (one turn)."""

    schema_version: int = 1
    text: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    provider_request_id: str | None = None
    model: str = ""
    #: Further choices when ``SamplingParams.n > 1`` (judges' votes); ``text`` is the first.
    alternatives: tuple[str, ...] = ()


class Trial(Record):
    """One (model, condition, request, sample) run, completed or failed with its reason."""

    schema_version: int = 1
    model: str
    condition_id: str
    request_id: str
    sample: int = 0
    status: TrialStatus
    error: str | None = None
    #: Every assistant turn, in order: more than one when ``<NEXT/>`` continued the reply.
    completions: tuple[Completion, ...] = ()
    cache_key: str = ""
    cost_usd: float = 0.0
    #: Which configuration produced it (:func:`afperturb.store.run_variant`: model config,
    #: seed, sampling params, turns, scenario templates). Part of the key, so a sweep with
    #: another seed or temperature adds trials beside the first one's instead of replacing them.
    variant: str = ""

    @property
    def key(self) -> str:
        """A stable identity for the trial, used by labels and the store."""
        return trial_key(self.model, self.condition_id, self.request_id, self.sample, self.variant)

    @property
    def transcript(self) -> str:
        """A hash of the reply text: which transcript a label was computed from."""
        return transcript_hash(self.text)

    @property
    def text(self) -> str:
        """The whole assistant reply, continuation turns joined."""
        return "".join(c.text for c in self.completions)

    @property
    def input_tokens(self) -> int:
        """Prompt tokens over all turns."""
        return sum(c.usage.input_tokens for c in self.completions)

    @property
    def output_tokens(self) -> int:
        """Completion tokens over all turns."""
        return sum(c.usage.output_tokens for c in self.completions)

    @property
    def cache_read_tokens(self) -> int:
        """Prompt tokens read from the provider's prompt cache, over all turns."""
        return sum(c.usage.cache_read_tokens for c in self.completions)

    @property
    def cache_write_tokens(self) -> int:
        """Prompt tokens written to the provider's prompt cache, over all turns."""
        return sum(c.usage.cache_write_tokens for c in self.completions)


def trial_key(
    model: str, condition_id: str, request_id: str, sample: int, variant: str = ""
) -> str:
    """The canonical trial identity string (``variant`` appended when there is one)."""
    base = f"{model}|{condition_id}|{request_id}|{sample}"
    return f"{base}|{variant}" if variant else base


def transcript_hash(text: str) -> str:
    """The first 16 hex digits of the sha256 of a reply's text (labels record what they read)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Label(Record):
    """One classifier's verdict on one trial.

    ``value`` is the classifier's own vocabulary (``accepted``/``rejected``/a format failure for
    tags; ``af``/``maybe``/``not_af`` for AF reasoning); ``complied`` and ``af_reasoning`` are the
    booleans the statistics read (None where this classifier does not say). ``config_hash``
    identifies the judge's configuration, so a changed judge re-runs only itself.
    """

    schema_version: int = 1
    trial_key: str
    classifier: str
    config_hash: str = ""
    value: str
    score: float | None = None
    complied: bool | None = None
    af_reasoning: bool | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    #: :func:`transcript_hash` of the trial text this label read ("" when unknown: labels
    #: stored before it was recorded). When the trial is rewritten with another reply, the
    #: store deletes such labels with the old reply, and a judge run labels it again.
    transcript: str = ""


#: ``SweepResult.to_frame()``'s schema: these columns, with one column per axis (its level)
#: placed after ``scenario``. The statistics read only these; axis names may not reuse them.
FRAME_HEAD_COLUMNS = ("model", "condition_id", "scenario")
#: One column per fact, in :class:`Facts` order.
FRAME_FACT_COLUMNS = tuple(Facts.model_fields)
#: Columns that vary per trial (everything else describes the condition). Each label column
#: has companions: ``<column>_source`` names the classifier and config ("strongreject:3f9a1c2b")
#: whose label the cell shows, ``<column>_error`` a judge that failed on the trial (see
#: ``docs/classifiers.md`` for which label wins).
FRAME_TRIAL_COLUMNS = (
    "request_id",
    "sample",
    "status",
    "error",
    "label",
    "label_source",
    "complied",
    "complied_source",
    "complied_error",
    "af_reasoning",
    "af_reasoning_source",
    "af_reasoning_error",
    "partial",
    "partial_source",
    "partial_error",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_s",
    "cost_usd",
    "cached",
)
#: Every non-axis column, in order.
FRAME_COLUMNS = (*FRAME_HEAD_COLUMNS, *FRAME_FACT_COLUMNS, *FRAME_TRIAL_COLUMNS)


__all__ = [
    "FRAME_COLUMNS",
    "FRAME_FACT_COLUMNS",
    "FRAME_HEAD_COLUMNS",
    "FRAME_TRIAL_COLUMNS",
    "Completion",
    "Condition",
    "Facts",
    "Label",
    "Message",
    "Record",
    "Request",
    "Role",
    "SamplingParams",
    "Trial",
    "TrialStatus",
    "Usage",
    "UserRecord",
    "transcript_hash",
    "trial_key",
]
