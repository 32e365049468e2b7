"""Stopping a background task so that it is certainly stopped.

On Python 3.11, ``asyncio.wait_for`` can swallow a cancellation that arrives as its timeout fires
(github.com/python/cpython/issues/86296, fixed in 3.12): the task then runs on, and code that cancelled it once and
awaited it waits forever. A call's background loops (the lease's renewals, the turn writer) are stopped through
:func:`cancel_and_wait`, which cancels again until the task is done.
"""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task | None, *, every: float = 1.0) -> None:
    """Cancel ``task`` (again every ``every`` seconds while it runs on) until it is done. Its result or error is
    retrieved and dropped: the caller stops it because it no longer wants either."""
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if task is not None and not task.cancelled():
        task.exception()
