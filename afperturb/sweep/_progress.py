"""Progress display: tqdm's auto mode (notebook widget or terminal bar), throttled."""

from __future__ import annotations

import importlib.util
import time
from typing import Any


def _tqdm_class() -> Any:
    """Pick the progress bar: a widget where one can be drawn, the terminal bar elsewhere.

    ``tqdm.auto`` in a notebook without ipywidgets warns ("IProgress not found") and falls back
    anyway; choosing the plain bar ourselves keeps notebooks free of that warning.
    """
    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm

        return tqdm
    from tqdm.auto import tqdm as auto_tqdm

    return auto_tqdm


class Progress:
    """Trials done, failures, tokens and cost; a no-op when disabled.

    The bar's postfix is refreshed at most every ``interval`` seconds, so a fast simulated
    sweep does not spend its time formatting numbers.
    """

    def __init__(self, total: int, *, enabled: bool, desc: str = "", interval: float = 0.5):
        self._bar: Any = None
        self._last = 0
        self._stamp = 0.0
        self._interval = interval
        if enabled:
            self._bar = _tqdm_class()(total=total, desc=desc, unit="trial", dynamic_ncols=True)

    def update(self, done: int, failed: int, tokens: int, cost: float) -> None:
        """Advance to ``done`` trials; refresh the postfix when the interval has passed."""
        if self._bar is None:
            return
        now = time.monotonic()
        if now - self._stamp < self._interval:
            return
        self._stamp = now
        self._advance(done, failed, tokens, cost)

    def _advance(self, done: int, failed: int, tokens: int, cost: float) -> None:
        self._bar.update(done - self._last)
        self._last = done
        self._bar.set_postfix(failed=failed, tokens=tokens, cost=f"${cost:.4f}", refresh=False)

    def close(self, done: int, failed: int, tokens: int, cost: float) -> None:
        """Show the final numbers and close the bar."""
        if self._bar is None:
            return
        self._advance(done, failed, tokens, cost)
        self._bar.close()


__all__ = ["Progress"]
