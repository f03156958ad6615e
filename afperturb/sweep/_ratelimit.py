"""Adaptive rate limiting: request/token buckets and an AIMD concurrency window.

The user states the provider's limits (``rate_limit=(rpm, tpm)``); two token buckets hold the
sweep under them. Independently, an AIMD window caps how many requests are on the wire: a 429
halves it (at most once per cool-down, so one storm counts once, not once per request), every
success grows it by about one per window's worth of successes, back up to the configured
concurrency.

The provider's own rate-limit headers steer it too (:meth:`AdaptiveLimiter.observe_headers`,
fed every reply's headers by the HTTP backends through
:attr:`~afperturb.models.base.GenerationContext.on_headers`): the stated per-minute limits
(OpenAI's ``x-ratelimit-limit-*``, Anthropic's ``anthropic-ratelimit-*-limit``) become the
buckets' rates, or lower the user's; and when fewer requests (or tokens) remain than are on
the wire, new requests wait until enough have come back instead of running into a 429 storm.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

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

    def lower_to(self, per_minute: float) -> None:
        """Slow the bucket to ``per_minute`` if that is slower than its rate (never faster)."""
        rate = per_minute / 60.0
        if 0 < rate < self.rate:
            self.rate = rate
            self.capacity = max(1.0, rate)
            self.level = min(self.level, self.capacity)


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
        #: Per-minute limits the provider stated in its headers ("requests", "tokens").
        self.provider_limits: dict[str, float] = {}
        self._tokens_in_flight = 0.0

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
        self._tokens_in_flight += tokens

    def release(self, tokens: float = 0.0) -> None:
        """Give the slot back (synchronous, so it is safe in ``finally`` under cancellation).

        ``tokens``: what :meth:`acquire` was given, once the request is off the wire.
        """
        self._active -= 1
        if tokens:
            self._tokens_in_flight = max(0.0, self._tokens_in_flight - tokens)
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
        """Learn from a reply's rate-limit headers (OpenAI's and Anthropic's spellings).

        ``headers`` is an HTTP client's case-insensitive mapping (a plain dict is lower-cased
        first). For requests and for tokens: a stated limit (taken as per minute, as both
        providers document) becomes the bucket's rate, or lowers it, never raises it; and when
        the remaining allowance is smaller than what is on the wire, new requests pause until
        the shortfall has refilled at that rate (or until the stated reset, if sooner or if
        the limit is unknown).
        """
        if type(headers) is dict:
            headers = {k.lower(): v for k, v in headers.items()}
        get = headers.get
        if get("x-ratelimit-remaining-requests") is not None or get("x-ratelimit-limit-requests"):
            for kind in ("requests", "tokens"):
                self._observe(
                    kind,
                    get(f"x-ratelimit-limit-{kind}"),
                    get(f"x-ratelimit-remaining-{kind}"),
                    get(f"x-ratelimit-reset-{kind}"),
                )
        elif get("anthropic-ratelimit-requests-remaining") is not None:
            for kind in ("requests", "tokens"):
                self._observe(
                    kind,
                    get(f"anthropic-ratelimit-{kind}-limit"),
                    get(f"anthropic-ratelimit-{kind}-remaining"),
                    get(f"anthropic-ratelimit-{kind}-reset"),
                )

    def _observe(
        self, kind: str, limit: str | None, remaining: str | None, reset: str | None
    ) -> None:
        per_minute = _number(limit)
        left = _number(remaining)
        # What the requests still on the wire will use (the one answered still holds a slot).
        on_wire = max(0.0, self._active - 1.0) if kind == "requests" else self._tokens_in_flight
        known = self.provider_limits.get(kind)
        if per_minute is not None and per_minute > 0 and known != per_minute:
            self._adopt(kind, per_minute, None if left is None else left - on_wire)
        if left is None or (left >= on_wire and left > 0):
            return
        shortfall = max(1.0, on_wire - left)
        wait = parse_reset(reset) if reset is not None else None
        if per_minute:
            refill = 60.0 * shortfall / per_minute
            wait = refill if wait is None else min(wait, refill)
        if wait is not None and wait > 0:
            self._paused_until = max(self._paused_until, self._clock() + min(wait, 60.0))

    def _adopt(self, kind: str, per_minute: float, spare: float | None) -> None:
        """A provider-stated per-minute limit: the bucket's rate, or a lower one for it.

        A new bucket starts with what the provider says is left (``spare``: remaining minus
        what is on the wire), not full, so it does not spend an allowance already used.
        """
        self.provider_limits[kind] = per_minute
        bucket = self._rpm if kind == "requests" else self._tpm
        if bucket is None:
            bucket = TokenBucket.per_minute(per_minute, self._clock())
            if spare is not None:
                bucket.level = min(bucket.capacity, max(0.0, spare))
            if kind == "requests":
                self._rpm = bucket
            else:
                self._tpm = bucket
        else:
            bucket.lower_to(per_minute)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_reset(text: str) -> float | None:
    """Seconds until a rate-limit reset, from a duration or a time; None if unreadable.

    A duration is OpenAI's form (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1.5"``); a time is
    Anthropic's RFC 3339 (``2026-01-01T00:00:30Z``).

    Example:
        >>> parse_reset("1m30s")
        90.0
    """
    seconds = parse_duration(text)
    if seconds is not None:
        return seconds
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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


__all__ = ["AdaptiveLimiter", "TokenBucket", "parse_duration", "parse_reset"]
