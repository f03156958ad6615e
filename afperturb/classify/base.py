"""The classifier protocol: anything that turns a finished trial into a :class:`Label`.

Cheap, synchronous classifiers (the tag parser, the offline heuristics) run inline in the sweep
as each trial finishes; LLM judges run afterwards through a model backend (see ``judges``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from afperturb.records import Condition, Label, Trial


@runtime_checkable
class Classifier(Protocol):
    """A synchronous classifier of one trial."""

    #: Short stable name, e.g. ``"tags"`` or ``"heuristic_af"``; labels are stored under it.
    name: str

    @property
    def config_hash(self) -> str:
        """Hash of everything that changes this classifier's labels."""
        ...

    def label(self, trial: Trial, condition: Condition) -> Label:
        """Label one completed trial (never called for failed ones)."""
        ...


__all__ = ["Classifier"]
