"""Adaptive rate limiting: request/token buckets and an AIMD concurrency window.

The user states the provider's limits (``rate_limit=(rpm, tpm)``); two token buckets hold the
sweep under them. Independently, an AIMD window caps how many requests are on the wire: a 429
halves it (at most once per cool-down, so one storm counts once, not once per request), every
success grows it by about one per window's worth of successes, back up to the configured
concurrency. Backends that see ``x-ratelimit-*`` headers can call :meth:`observe_headers`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class TokenBucket:
    """A classic token bucket: ``rate`` per second, holding at most ``capacity``."""

    rate: float
    capacity: float
    level: float
    stamp: float

    @classmethod
    def per_minute(cls, per_minute: float, now: float) -> TokenBucket:
        """A bucket for a per-minute limit, allowing at most one second's burst."""
        rate = per_minute / 60.0
        capacity = max(1.0, rate)
        return cls(rate=rate, capacity=capacity, level=capacity, stamp=now)

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0 if now); refills first."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        # A request bigger than the bucket may go once the bucket is full (else it never could).
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        """Remove ``amount`` (may go negative: debt is repaid by later refills)."""
        self.level -= amount


class AdaptiveLimiter:
    """Gate every HTTP attempt: ``async with limiter.slot(tokens): ...``.

    Args:
        concurrency: the most requests on the wire (the AIMD window's ceiling).
        rpm: requests per minute, or None for no limit.
        tpm: tokens per minute (prompt + expected output), or None.
        min_window: the window never shrinks below this.
        cooldown_s: one 429 storm halves the window once per this many seconds.
        clock: monotonic clock in seconds (injected in tests).
        sleep: async sleep (injected in tests).
    """

    def __init__(
        self,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        min_window: int = 1,
        cooldown_s: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ):
        self.max_window = max(1, concurrency)
        self.min_window = max(1, min(min_window, self.max_window))
        self.window = float(self.max_window)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._rpm = TokenBucket.per_minute(rpm, now) if rpm else None
        self._tpm = TokenBucket.per_minute(tpm, now) if tpm else None
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_cut = -float("inf")
        self._paused_until = 0.0
        #: Times the window was cut (a 429 storm counts once per cool-down), and its low point.
        self.cuts = 0
        self.lowest = self.window

    @property
    def active(self) -> int:
        """Requests currently holding a slot."""
        return self._active

    async def acquire(self, tokens: float = 0.0) -> None:
        """Wait for a window slot and for the buckets to allow one request of ``tokens``."""
        while self._active >= int(self.window):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # pass on the wake-up we were given
                raise
        self._active += 1
        try:
            await self._wait_buckets(tokens)
        except BaseException:
            self.release()
            raise

    async def _wait_buckets(self, tokens: float) -> None:
        while True:
            now = self._clock()
            delay = max(0.0, self._paused_until - now)
            if self._rpm is not None:
                delay = max(delay, self._rpm.wait_time(1.0, now))
            if self._tpm is not None and tokens > 0:
                delay = max(delay, self._tpm.wait_time(tokens, now))
            if delay <= 0:
                break
            await self._sleep(delay)
        if self._rpm is not None:
            self._rpm.take(1.0)
        if self._tpm is not None and tokens > 0:
            self._tpm.take(tokens)

    def release(self) -> None:
        """Give the slot back (synchronous, so it is safe in ``finally`` under cancellation)."""
        self._active -= 1
        self._wake()

    def _wake(self) -> None:
        free = int(self.window) - self._active
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def settle_tokens(self, estimated: float, actual: float) -> None:
        """Correct the token bucket once the real usage is known."""
        if self._tpm is not None:
            self._tpm.take(actual - estimated)

    def on_success(self) -> None:
        """Additive increase: about +1 to the window per window's worth of successes."""
        if self.window < self.max_window:
            self.window = min(float(self.max_window), self.window + 1.0 / self.window)
            if self._waiters:
                self._wake()

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """Multiplicative decrease (once per cool-down) and a pause the server asked for."""
        now = self._clock()
        if retry_after:
            self._paused_until = max(self._paused_until, now + min(retry_after, 60.0))
        if now - self._last_cut >= self.cooldown_s:
            self._last_cut = now
            self.window = max(float(self.min_window), self.window / 2.0)
            self.cuts += 1
            self.lowest = min(self.lowest, self.window)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Hook for ``x-ratelimit-*`` headers: pause when the provider says we are out.

        Reads ``x-ratelimit-remaining-requests`` / ``-tokens`` and the matching
        ``x-ratelimit-reset-*`` (seconds, or OpenAI's ``1s``/``20ms`` form).
        """
        lower = {k.lower(): v for k, v in headers.items()}
        for kind in ("requests", "tokens"):
            remaining = lower.get(f"x-ratelimit-remaining-{kind}")
            reset = lower.get(f"x-ratelimit-reset-{kind}")
            if remaining is None or reset is None:
                continue
            try:
                if float(remaining) > 0:
                    continue
            except ValueError:
                continue
            seconds = parse_duration(reset)
            if seconds is not None:
                self._paused_until = max(self._paused_until, self._clock() + seconds)


def parse_duration(text: str) -> float | None:
    """Parse ``"1.5"``, ``"20ms"``, ``"2s"``, ``"1m30s"`` into seconds (None if unreadable)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        i += len(unit)
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit)
        if scale is None or not number:
            return None
        total += float(number) * scale
        number = ""
    return total if not number else None


__all__ = ["AdaptiveLimiter", "TokenBucket", "parse_duration"]
