"""The afperturb exception tree.

Every error a user can see derives from :class:`AfperturbError`, so ``except
af.AfperturbError`` catches all of them and nothing else::

    AfperturbError
    ├── TemplateError            a scenario template or axis declaration is broken
    ├── DesignError              a bad scenario, axis, level or contradictory condition, or a
    │                            bad option, keyword, record field or input file (before any
    │                            request is sent)
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

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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
    """A bad design or input, named with what is allowed.

    An unknown scenario, axis, level, option or keyword; levels that contradict each other; an
    option or record field out of range; an unreadable or non-UTF-8 input file.
    """


def unknown_choice(
    kind: str, value: object, allowed: Iterable[object], *, suggest: bool = False
) -> DesignError:
    """Build the standard "unknown X 'v'; valid Xs: a, b, c" error.

    With ``suggest``, a close match of a misspelled name is named first ("did you mean").
    """
    allowed = list(allowed)
    options = ", ".join(repr(a) for a in allowed)
    hint = ""
    if suggest and isinstance(value, str):
        close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DesignError(f"unknown {kind} {value!r}{hint}; valid {kind}s: {options}")


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters so a huge input never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_value(what: str, value: object, allowed: str) -> DesignError:
    """Build the standard "X must be <allowed>; got v" error."""
    return DesignError(f"{what} must be {allowed}; got {short_repr(value)}")


def invalid_fields(
    where: str,
    error: ValidationError,
    fields: Iterable[str] | None = None,
    *,
    kind: str | None = None,
) -> DesignError:
    """One DesignError for a pydantic ``ValidationError``: each bad field, its value, the rule.

    ``where`` names the object ("SamplingParams" gives "SamplingParams.temperature: got -5;
    input should be greater than or equal to 0"). ``kind`` ("sweep option") names fields as
    "sweep option 'samples'" instead, and ``fields`` turns an unknown key into "unknown
    <kind> 'x' (did you mean ...); valid <kind>s: ...".
    """
    label = kind or f"{where} field"
    problems: list[str] = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        name = (f"{kind} {loc!r}" if kind else f"{where}.{loc}") if loc else where
        problem = item["type"]
        if problem == "extra_forbidden" and fields is not None and len(item["loc"]) == 1:
            problems.append(str(unknown_choice(label, loc, fields, suggest=True)))
        elif problem == "extra_forbidden":
            problems.append(f"{name}: unknown field")
        elif problem == "missing":
            problems.append(f"{name}: missing (required)")
        else:
            message = str(item["msg"])
            rule = message[:1].lower() + message[1:]
            problems.append(f"{name}: got {short_repr(item.get('input'))}; {rule}")
    return DesignError("; ".join(problems))


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


class AfperturbWarning(UserWarning):
    """Something the user should know that is not an error (e.g. which of several runs loaded)."""


__all__ = [
    "AfperturbError",
    "AfperturbWarning",
    "BackendError",
    "BackendResponseError",
    "BackendTimeout",
    "ClassifierError",
    "DesignError",
    "InsufficientDataError",
    "RateLimited",
    "StoreError",
    "TemplateError",
    "invalid_fields",
    "invalid_value",
    "short_repr",
    "unknown_choice",
]
