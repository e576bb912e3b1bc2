"""The connection pool's waiting line: first come, first served, even against newcomers."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from serve_app.db import create_engine
from serve_app.db_pool import HandOffQueue


async def test_a_returned_item_goes_to_the_longest_waiter_not_to_a_newcomer():
    queue = HandOffQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)  # both wait now
    queue.put_nowait("connection")
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()  # a newcomer arriving before the waiter runs gets nothing
    assert await first == "connection"
    assert not second.done()
    second.cancel()


async def test_a_waiter_that_times_out_as_it_is_served_passes_the_item_on():
    queue = HandOffQueue()
    leaving = asyncio.ensure_future(queue.get())
    staying = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("connection")  # handed to `leaving` ...
    leaving.cancel()  # ... which is cancelled (its pool timeout) before it ran
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await staying == "connection"


@pytest.mark.mysql
@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_pool_waits_are_served_in_arrival_order(database_url):
    from serve_app.settings import Settings

    engine = create_engine(Settings(database_url=database_url, db_pool_size=1,
                                    db_max_overflow=0, db_pool_timeout_seconds=30))
    order: list[int] = []

    async def use(i: int) -> None:
        async with engine.connect() as conn:
            order.append(i)
            await conn.execute(text("SELECT SLEEP(0.02)"))

    try:
        async with engine.connect() as holder:  # every other user waits for this connection
            tasks = []
            for i in range(12):
                tasks.append(asyncio.create_task(use(i)))
                await asyncio.sleep(0.01)  # arrive one after another
            await holder.execute(text("SELECT 1"))
        await asyncio.gather(*tasks)
    finally:
        await engine.dispose()
    assert order == list(range(12))
