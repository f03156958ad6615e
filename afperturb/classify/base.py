"""The classifier protocol: anything that turns a finished trial into a :class:`Label`.

Cheap, synchronous classifiers (the tag parser, the offline heuristics) run inline in the sweep
as each trial finishes; LLM judges run afterwards through a model backend (see ``judges``).

A classifier that reads the request's text sets ``reads_request = True`` and takes it as
``label(trial, condition, request=...)`` (the heuristics do: the request's own words quoted in
a reply are not the model's). :func:`labeller` calls either kind the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from afperturb.records import Condition, Label, Request, Trial

#: ``label`` as a function of (trial, condition, request or None).
LabelFunction = Callable[[Trial, Condition, Request | None], Label]


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


def labeller(classifier: Classifier) -> LabelFunction:
    """``classifier.label`` as a function of (trial, condition, request).

    The request goes to classifiers with ``reads_request`` true, as ``request=``; the others
    keep the two-argument call, so classifiers written before the request existed still work.
    """
    label: Any = classifier.label
    if getattr(classifier, "reads_request", False):

        def with_request(trial: Trial, condition: Condition, request: Request | None) -> Label:
            return stamp(label(trial, condition, request=request), trial)

        return with_request

    def without_request(trial: Trial, condition: Condition, request: Request | None) -> Label:
        return stamp(label(trial, condition), trial)

    return without_request


def stamp(label: Label, trial: Trial) -> Label:
    """``label`` with the hash of the transcript it read (``Label.transcript``).

    Set here, where every classifier is called, so that no classifier has to remember it: when
    a trial is rewritten with another reply, the store deletes the labels of the old one in
    the same transaction, and a judge run re-judges the trial.
    """
    digest = trial.transcript
    return label if label.transcript == digest else label.model_copy(update={"transcript": digest})


__all__ = ["Classifier", "LabelFunction", "labeller", "stamp"]
