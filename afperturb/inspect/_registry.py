"""inspect_ai's entry point for afperturb: ``inspect eval afperturb/paper --model ...``.

``-T`` options: ``preset`` (any of :data:`afperturb.design.PRESETS`, default ``paper``),
``requests`` (a number of synthetic requests, ``advbench`` or ``llm_lat``; default 100),
``samples`` (replies per condition and request: epochs; default 1), ``max_turns`` (default 4),
``seed`` (synthetic requests; default 0). For example::

    inspect eval afperturb/paper --model openai/gpt-4o -T requests=400
    inspect eval afperturb/paper -T preset=rater_sycophancy -T requests=llm_lat
"""

from __future__ import annotations

from typing import Any

from inspect_ai import task as _inspect_task

from afperturb.inspect._task import task as _design_task


@_inspect_task
def paper(
    preset: str = "paper",
    requests: str = "100",
    samples: int = 1,
    max_turns: int = 4,
    seed: int = 0,
) -> Any:
    """An afperturb design (a preset) as an inspect task; see :mod:`afperturb.inspect`."""
    return _design_task(preset, requests, samples, max_turns=max_turns, seed=seed)
