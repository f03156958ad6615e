"""Prompt-cache warm-up: each condition's first request goes alone, the others after it.

Every trial of a condition shares its long system prompt. A provider's prompt cache stores that
prefix when a request writes it and serves it to the requests that come *after* the write
(Anthropic bills a write at 1.25× the input price and a read at 0.1×; OpenAI reads at its
cached-input price). Requests sent at the same moment all miss: with 64 in flight, the first
64 requests of a condition would each pay for a write. So, for a backend with prompt caching
on (its ``prompt_caching`` attribute), the engine:

* orders the work so that the first pending trial of every condition comes first (all
  conditions' warm-ups fly together, one reply time at the start of the sweep), then the rest
  condition by condition, so a condition's requests arrive while its entry lives (5 minutes,
  refreshed by every hit);
* holds a condition's other trials until its warm-up's first turn has come back (answered or
  failed), so they read what it wrote.

Nothing else changes: the same trials, the same completion cache keys, the same results
(a test checks a sweep with caching on and off gives identical frames).
"""

from __future__ import annotations

import asyncio


class Warmup:
    """One gate per condition: the first trial to reach it opens the cache for the others."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._gates: dict[str, asyncio.Event] = {}

    def begin(self, condition_id: str) -> bool:
        """True for the condition's first trial to send (its warm-up), False for the rest."""
        if not self.enabled or condition_id in self._gates:
            return False
        self._gates[condition_id] = asyncio.Event()
        return True

    async def wait(self, condition_id: str) -> None:
        """Until the condition's warm-up has its first reply (no wait when there is none)."""
        gate = self._gates.get(condition_id)
        if gate is not None and not gate.is_set():
            await gate.wait()

    def release(self, condition_id: str) -> None:
        """The warm-up's first turn came back: let the condition's other trials go."""
        gate = self._gates.get(condition_id)
        if gate is not None:
            gate.set()


__all__ = ["Warmup"]
