"""Group commit: concurrent writers share one transaction instead of queueing for their own.

While a transaction is being written, new submissions gather; the next flush takes them all.
Nobody waits longer than one transaction for their turn, and under load each commit carries
many callers' work, which is what SQLite's per-commit cost rewards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)
# A job run cancelled by shutdown writes what it was told, waiting no longer than this: drain
# must end within ``server.drain_seconds`` (and a second) whatever the ledger does.
FINAL_WRITE_S = 0.5

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Coalesces :meth:`submit` calls into batched calls of ``flush``.

    ``flush`` receives every item waiting at that moment and returns one result per item, in
    order. If it raises, every submitter of that batch gets the exception: either all of a
    batch committed or none of it did.
    """

    def __init__(self, flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]]) -> None:
        self._flush = flush
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` for the next flush and wait until it is committed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        # A caller that gives up cancels only its own future: the flush runs in its own task,
        # so the others' shared transaction goes on (and skips the cancelled future).
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Wait for the flush in progress, if any."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


async def finish_within(
    write: Awaitable[None], what: str, timeout_s: float = FINAL_WRITE_S
) -> bool:
    """Complete ``write`` although its caller is being cancelled, waiting at most ``timeout_s``.

    A job run cancelled by shutdown still records what the remote side had already told it
    (DESIGN §14). Shielded, so the cancellation cannot cut the write short; bounded, so
    shutdown still ends in time when the ledger is stuck. Never raises: the run is ending
    anyway, so a failure is one warning naming ``what`` was not recorded.

    Returns:
        Whether the write completed. If it timed out it goes on in the background, and the
        ledger's close waits for it.
    """
    try:
        await asyncio.wait_for(asyncio.shield(write), timeout_s)
    except TimeoutError:
        problem = f"not written within {timeout_s} s"
    except Exception as exc:  # reported in one line: the run is ending anyway
        problem = f"{type(exc).__name__}: {exc}"
    else:
        return True
    logger.warning(
        "%s of a cancelled run not recorded (%s)", what, problem, extra={"event": "job.unrecorded"}
    )
    return False
