"""afperturb: perturbation experiments on alignment faking, and why models do it."""

from afperturb import errors
from afperturb.errors import (
    AfperturbError,
    BackendError,
    BackendResponseError,
    BackendTimeout,
    ClassifierError,
    DesignError,
    InsufficientDataError,
    RateLimited,
    StoreError,
    TemplateError,
)
from afperturb.records import (
    Completion,
    Condition,
    Facts,
    Label,
    Message,
    Request,
    SamplingParams,
    Trial,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AfperturbError",
    "BackendError",
    "BackendResponseError",
    "BackendTimeout",
    "ClassifierError",
    "Completion",
    "Condition",
    "DesignError",
    "Facts",
    "InsufficientDataError",
    "Label",
    "Message",
    "RateLimited",
    "Request",
    "SamplingParams",
    "StoreError",
    "TemplateError",
    "Trial",
    "Usage",
    "__version__",
    "errors",
]
