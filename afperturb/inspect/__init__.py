"""afperturb designs as inspect_ai tasks, and inspect_ai logs as afperturb results.

The ``inspect`` extra (``pip install "afperturb[inspect]"``); inspect_ai is imported only when
these functions are called, like the plot extra's matplotlib.

* :func:`task` turns a design into an inspect ``Task``: one ``Sample`` per (condition,
  request), the rendered messages as its input and the condition id, levels, facts and the
  request in its metadata (``metadata["afperturb"]``); ``epochs`` are afperturb's samples. The
  solver runs the sweep's ``<NEXT/>`` continuation (up to ``max_turns`` turns until a
  ``</OUTPUT>``); the scorer is afperturb's tag parser (1 for ``<request_fully_accepted/>``, 0
  otherwise, the tag label in the score's metadata), and with ``judge=`` an afperturb judge
  beside it (:func:`judge_scorer`). ``inspect eval afperturb/paper --model
  openai/gpt-4o -T requests=100`` runs it from the command line (the entry point
  :mod:`afperturb.inspect._registry`).
* :func:`from_inspect_log` reads a ``.eval`` log of such a task into a store: it rebuilds each
  condition from the scenario and levels in the metadata (the id must come out the same) and
  replays the log's replies through the sweep engine (:class:`afperturb.models.Replay`), so the
  result has the trials, labels, continuations and usage a sweep of the same design on those
  replies would have, and ``attribute()``, the report and the judges run on it unchanged.

Not carried over: prefills (a design with ``prefill`` levels is refused by :func:`task`;
inspect's chat models cannot continue a final assistant message everywhere) and per-turn usage
(a sample's usage is put on its last turn).
"""

from __future__ import annotations

from afperturb.inspect._log import from_inspect_log
from afperturb.inspect._task import continue_turns, judge_scorer, tags_scorer, task

__all__ = ["continue_turns", "from_inspect_log", "judge_scorer", "tags_scorer", "task"]
