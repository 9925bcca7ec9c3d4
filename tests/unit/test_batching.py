"""Group commit: concurrent writers share a flush; a caller giving up never undoes the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bridge import batching


async def test_concurrent_submissions_share_one_flush_and_each_gets_its_result() -> None:
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        flushed.append(list(items))
        await asyncio.sleep(0)
        return [item * 10 for item in items]

    group = batching.GroupCommit(flush)
    results = await asyncio.gather(*(group.submit(n) for n in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert flushed == [[0, 1, 2, 3, 4]]


async def test_a_cancelled_caller_does_not_cancel_the_shared_flush() -> None:
    committed: list[int] = []
    release = asyncio.Event()

    async def flush(items: Sequence[int]) -> list[None]:
        await release.wait()
        committed.extend(items)
        return [None] * len(items)

    group = batching.GroupCommit(flush)
    quitter = asyncio.create_task(group.submit(1))
    stayer = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.sleep(0)
    release.set()

    assert await stayer is None
    await group.close()
    assert committed == [1, 2]
    assert quitter.cancelled()
