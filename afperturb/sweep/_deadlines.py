"""Attempt timeouts for a thousand tasks with one timer.

``asyncio.timeout`` schedules a timer handle per attempt and cancels it afterwards; at a
thousand attempts in flight that is a heap push, a cancellation and a later heap clean-up per
request, several microseconds each on the engine's hot path. The engine's attempt timeout is
coarse (120 s by default), so one periodic check over a dict of deadlines does the same job:
an attempt registers its task on entry and unregisters on exit (two dict operations), and the
check cancels tasks whose deadline passed. The attempt then tells its own timeout apart from
any other cancellation the way ``asyncio.timeout`` does (``Task.uncancel`` counts).
"""

from __future__ import annotations

import asyncio
from typing import Any

_Task = asyncio.Task[Any]


class Deadlines:
    """Per-task deadlines checked every ``resolution`` seconds by one timer.

    A task's timeout fires between ``timeout`` and ``timeout + resolution`` seconds after
    :meth:`enter`; the resolution is a twentieth of the timeout, between 10 ms and 1 s.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.resolution = min(1.0, max(0.01, timeout / 20))
        #: Running clocks: task → (deadline, the task's cancel count on entry).
        self._due: dict[_Task, tuple[float, int]] = {}
        #: Tasks this object cancelled, with their cancel count on entry.
        self._fired: dict[_Task, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, task: _Task) -> None:
        """Start ``task``'s clock."""
        loop = task.get_loop()
        self._due[task] = (loop.time() + self.timeout, task.cancelling())
        if self._timer is None:
            self._timer = loop.call_later(self.resolution, self._check, loop)

    def leave(self, task: _Task) -> None:
        """Stop ``task``'s clock (its attempt returned or raised, not cancelled)."""
        self._due.pop(task, None)
        if self._fired.pop(task, None) is not None:
            # The attempt swallowed our cancellation and returned: undo it, as asyncio.timeout
            # does, so a later, unrelated cancellation is not mistaken for this timeout.
            task.uncancel()

    def timed_out(self, task: _Task) -> bool:
        """After a ``CancelledError`` in ``task``: whether this timeout, and only it, caused it.

        True uncancels the task (the caller turns the cancellation into a timeout error);
        False means someone else cancelled it too, and the error must propagate.
        """
        self._due.pop(task, None)
        cancelling = self._fired.pop(task, None)
        if cancelling is None:
            return False
        return task.uncancel() <= cancelling

    def close(self) -> None:
        """Stop the timer (the sweep is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, (due, cancelling) in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._fired[task] = cancelling
                task.cancel()
        self._timer = loop.call_later(self.resolution, self._check, loop) if self._due else None
