"""The engine's attempt deadlines: one timer for every task in flight, asyncio.timeout's rules."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from afperturb.sweep._deadlines import Deadlines


async def _attempt(deadlines: Deadlines, work: asyncio.Future[str] | None = None) -> str:
    """An attempt as the engine writes it: "timeout" when the deadline cancelled it."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.enter(task)
    try:
        result = await (work if work is not None else asyncio.sleep(30, "late"))
    except asyncio.CancelledError:
        if not deadlines.timed_out(task):
            raise
        return "timeout"
    deadlines.leave(task)
    return result


async def test_a_hanging_attempt_times_out_and_a_quick_one_does_not() -> None:
    deadlines = Deadlines(0.05)
    loop = asyncio.get_running_loop()
    quick: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.01, quick.set_result, "answer")
    start = loop.time()
    results = await asyncio.gather(_attempt(deadlines), _attempt(deadlines, quick))
    assert results == ["timeout", "answer"]
    assert 0.05 <= loop.time() - start < 5.0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    deadlines.close()


async def test_many_tasks_share_one_timer() -> None:
    deadlines = Deadlines(0.05)
    results = await asyncio.gather(*(_attempt(deadlines) for _ in range(200)))
    assert results == ["timeout"] * 200
    assert deadlines._timer is None  # nothing left to watch: the timer stopped itself


async def test_an_outside_cancellation_is_not_a_timeout() -> None:
    deadlines = Deadlines(30.0)
    task = asyncio.ensure_future(_attempt(deadlines))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()


async def test_an_outside_cancellation_during_a_timeout_still_propagates() -> None:
    deadlines = Deadlines(0.02)
    task = asyncio.ensure_future(_attempt(deadlines))
    await asyncio.sleep(0)  # the attempt is waiting now
    deadlines._check(asyncio.get_running_loop())  # not due yet: nothing happens
    assert not task.done()
    _, count = deadlines._due[task]  # type: ignore[index]
    deadlines._due[task] = (0.0, count)  # type: ignore[index]
    deadlines._check(asyncio.get_running_loop())  # the deadline fires ...
    task.cancel()  # ... and someone else cancels the task in the same instant
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()


async def test_a_deadline_firing_as_the_answer_arrives_counts_as_a_timeout() -> None:
    # The answer is ready but the task has not resumed yet when the check cancels it: the
    # cancellation lands at the attempt's await, inside its handler, never later.
    deadlines = Deadlines(30.0)
    loop = asyncio.get_running_loop()
    work: asyncio.Future[str] = loop.create_future()
    task = asyncio.ensure_future(_attempt(deadlines, work))
    await asyncio.sleep(0)
    work.set_result("answer")
    deadlines._due[task] = (0.0, 0)  # type: ignore[index]
    deadlines._check(loop)
    assert await task == "timeout"
    assert task.cancelling() == 0
    deadlines.close()


async def test_a_swallowed_timeout_is_undone_on_leave() -> None:
    deadlines = Deadlines(30.0)
    loop = asyncio.get_running_loop()

    async def stubborn() -> str:
        task = asyncio.current_task()
        assert task is not None
        deadlines.enter(task)
        with contextlib.suppress(asyncio.CancelledError):  # a backend that swallows it
            await asyncio.sleep(30)
        deadlines.leave(task)
        assert task.cancelling() == 0
        return "answered"

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    deadlines._due[task] = (0.0, 0)  # type: ignore[index]
    deadlines._check(loop)
    assert await task == "answered"
    deadlines.close()
