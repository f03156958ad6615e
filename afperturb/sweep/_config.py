"""SweepConfig: every sweep option in one validated, serialisable object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from afperturb.errors import DesignError, invalid_fields
from afperturb.records import SamplingParams


class SweepConfig(BaseModel):
    """Options of :func:`afperturb.sweep.sweep`, grouped so they can be saved and reused.

    Keyword arguments given to ``sweep()`` override a passed ``config`` (see :meth:`merged`).
    Nothing here changes a cache key except ``seed``, ``samples`` (which trials exist) and
    ``params``. A bad or unknown option is a :class:`~afperturb.errors.DesignError` naming
    the option, its value and what is allowed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(default=1, ge=1)
    seed: int = 0
    #: Worker tasks, hence the most trials (and HTTP requests) in flight.
    concurrency: int = Field(default=64, ge=1)
    #: (requests per minute, tokens per minute); either may be None.
    rate_limit: tuple[float | None, float | None] | None = None
    #: Seconds before one HTTP attempt counts as a (retryable) timeout.
    timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    progress: bool = True
    params: SamplingParams = Field(default_factory=SamplingParams)
    #: Turns per trial, counting ``<NEXT/>`` continuations.
    max_turns: int = Field(default=4, ge=1)
    #: First backoff ceiling in seconds; doubles per attempt (full jitter) up to backoff_cap.
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_cap: float = Field(default=60.0, ge=0)
    #: Re-running a sweep tries its failed trials again (completed ones come from the cache).
    retry_failed: bool = True
    #: Output tokens assumed per trial by estimate() and the token bucket.
    typical_output_tokens: int = Field(default=800, ge=1)
    # -- issue 8 (H8): batch mode and shards; none of these changes a cache key ---------------
    #: "realtime" sends one HTTP request per generation; "batch" uses the provider's batch API.
    mode: Literal["realtime", "batch"] = "realtime"
    #: ``(i, k)``: run only the work items whose stable hash % k == i (see afperturb.shard).
    shard: tuple[int, int] | None = None
    #: Worker processes (issue 4, H11): N > 1 forks N shard workers that share the store, each
    #: with 1/N of concurrency, rate limit and cost cap (see afperturb.sweep._processes).
    processes: int = Field(default=1, ge=1)
    #: Most requests per provider batch (OpenAI allows 50,000; Anthropic 100,000).
    batch_max_requests: int = Field(default=50_000, ge=1)
    #: Most bytes per uploaded batch (OpenAI allows 200 MB per file; Anthropic 256 MB).
    batch_max_bytes: int = Field(default=180_000_000, ge=1)
    #: Seconds between polls of the open batches.
    batch_poll_interval: float = Field(default=30.0, ge=0)
    #: Batch price as a fraction of the realtime price (both providers charge 50 %).
    batch_price_factor: float = Field(default=0.5, ge=0)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _option_error(exc) from exc

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(
        cls, value: tuple[float | None, float | None] | None
    ) -> tuple[float | None, float | None] | None:
        if value is not None and any(x is not None and not x > 0 for x in value):
            raise ValueError(
                "rate_limit is (requests per minute, tokens per minute), each > 0 or None "
                "(None: no limit)"
            )
        return value

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not (value[1] >= 1 and 0 <= value[0] < value[1]):
            raise ValueError(f"shard must be (i, k) with k >= 1 and 0 <= i < k; got {value}")
        return value

    def merged(self, overrides: dict[str, Any]) -> SweepConfig:
        """A copy with ``overrides`` applied and validated."""
        if not overrides:
            return self
        # model_validate runs __init__ (pydantic calls a custom one), so errors are converted.
        return SweepConfig.model_validate({**self.model_dump(), **overrides})


def _option_error(exc: ValidationError) -> DesignError:
    """The sweep options' ValidationError as one DesignError (option, value, rule)."""
    return invalid_fields("SweepConfig", exc, SweepConfig.model_fields, kind="sweep option")


#: Defaults of the keyword arguments of sweep(); an argument equal to its default does not
#: override a value set in an explicit ``config``.
DEFAULTS = SweepConfig()

__all__ = ["DEFAULTS", "SweepConfig"]
