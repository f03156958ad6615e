"""The afperturb exception tree.

Every error a user can see derives from :class:`AfperturbError`, so ``except
af.AfperturbError`` catches all of them and nothing else::

    AfperturbError
    ├── TemplateError            a scenario template or axis declaration is broken
    ├── DesignError              a bad scenario, axis, level or contradictory condition
    ├── BackendError             a model backend failed (carries condition/request ids, never keys)
    │   ├── RateLimited          HTTP 429 (retryable; carries retry_after seconds)
    │   ├── BackendTimeout       the request timed out or the connection failed (retryable)
    │   └── BackendResponseError a bad status or a body we cannot parse
    ├── StoreError               the SQLite store is unreadable, or its manifests disagree
    ├── ClassifierError          a judge is misconfigured or its answers cannot be parsed
    └── InsufficientDataError    a statistic has too little data to be computed

Errors name the bad value and the allowed ones, so the message alone says what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable


class AfperturbError(Exception):
    """Base class of every error afperturb raises on purpose."""


class TemplateError(AfperturbError):
    """A template or axis declaration is broken; the message points at file and line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f" ({path}" + (f", line {line}" if line is not None else "") + ")"
        super().__init__(message + where)
        self.path = path
        self.line = line


class DesignError(AfperturbError):
    """An unknown scenario, axis or level, or levels that contradict each other."""


def unknown_choice(kind: str, value: object, allowed: Iterable[object]) -> DesignError:
    """Build the standard "unknown X 'v'; valid: a, b, c" error."""
    options = ", ".join(repr(a) for a in allowed)
    return DesignError(f"unknown {kind} {value!r}; valid {kind}s: {options}")


class BackendError(AfperturbError):
    """A model backend failed.

    Carries what a user needs to find the trial again (condition and request ids, the HTTP
    status, the provider's request id) and never an API key or auth header.
    """

    #: Whether the sweep engine should try again.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        condition_id: str | None = None,
        request_id: str | None = None,
        provider_request_id: str | None = None,
        retryable: bool | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.condition_id = condition_id
        self.request_id = request_id
        self.provider_request_id = provider_request_id
        if retryable is not None:
            self.retryable = retryable


class RateLimited(BackendError):
    """HTTP 429; ``retry_after`` is the server's hint in seconds, if it gave one."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object):
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class BackendTimeout(BackendError):
    """The request timed out or the connection failed before an answer came."""

    retryable = True


class BackendResponseError(BackendError):
    """A non-success status or a body that cannot be parsed (5xx and bad bodies retry)."""


class StoreError(AfperturbError):
    """The store cannot be read or written, or two manifests disagree."""


class ClassifierError(AfperturbError):
    """A judge is misconfigured, or its answer cannot be parsed."""


class InsufficientDataError(AfperturbError):
    """Too few trials (or none in an arm) to compute the requested statistic."""


__all__ = [
    "AfperturbError",
    "BackendError",
    "BackendResponseError",
    "BackendTimeout",
    "ClassifierError",
    "DesignError",
    "InsufficientDataError",
    "RateLimited",
    "StoreError",
    "TemplateError",
    "unknown_choice",
]
