"""Provider batch APIs as the sweep's execution engine (``sweep(..., mode="batch")``).

:mod:`afperturb.batch._api` holds the two protocol clients (OpenAI Batch, Anthropic Message
Batches) over the realtime backends' httpx clients; :mod:`afperturb.batch._runner` the rounds of
submit → poll → collect with the bookkeeping that makes a killed batch sweep resumable. See
``docs/scale.md``.
"""

from __future__ import annotations

from afperturb.batch._api import (
    AnthropicBatch,
    BatchAPI,
    BatchStatus,
    ItemResult,
    OpenAIBatch,
    batch_api_for,
)
from afperturb.batch._model import BatchedModel
from afperturb.batch._runner import BatchRunner, chunk, custom_id, run_batch

__all__ = [
    "AnthropicBatch",
    "BatchAPI",
    "BatchRunner",
    "BatchStatus",
    "BatchedModel",
    "ItemResult",
    "OpenAIBatch",
    "batch_api_for",
    "chunk",
    "custom_id",
    "run_batch",
]
