"""The network locks: shared holders run together, an exclusive holder runs alone. The
process lock serves a node alone on its engine, the machine lock the nodes sharing one."""

import asyncio

import pytest

from swarmlet.runtime.docker import MachineNetworkLock, ProcessNetworkLock


@pytest.fixture(params=["process", "machine"])
def make_locks(request, tmp_path):
    """Two handles on one lock, as two nodes (or two coroutines of one node) hold it."""
    if request.param == "process":
        lock = ProcessNetworkLock()
        return lambda: (lock, lock)
    path = tmp_path / "networks.lock"
    return lambda: (MachineNetworkLock(path), MachineNetworkLock(path))


async def test_shared_holders_overlap(make_locks):
    first, second = make_locks()
    async with asyncio.timeout(5):
        async with first.shared():
            async with second.shared():  # would wait forever if shared excluded shared
                pass


async def test_an_exclusive_holder_waits_for_the_shared_ones_and_excludes_them(make_locks):
    first, second = make_locks()
    order = []
    release_reader = asyncio.Event()

    async def reader():
        async with first.shared():
            order.append("reader in")
            await release_reader.wait()
            order.append("reader out")

    async def writer():
        async with second.exclusive():
            order.append("writer in")
            await asyncio.sleep(0)  # let a waiting reader try to get in meanwhile
            order.append("writer out")

    async def late_reader():
        async with first.shared():
            order.append("late reader in")

    async with asyncio.timeout(5):
        reading = asyncio.ensure_future(reader())
        while order != ["reader in"]:
            await asyncio.sleep(0)
        writing = asyncio.ensure_future(writer())
        for _ in range(5):  # the writer gets many chances to (wrongly) enter
            await asyncio.sleep(0.02)
        assert "writer in" not in order
        release_reader.set()
        await asyncio.gather(reading, writing)
        await late_reader()
    assert order == ["reader in", "reader out", "writer in", "writer out", "late reader in"]


async def test_a_shared_holder_waits_for_the_exclusive_one(make_locks):
    first, second = make_locks()
    entered = asyncio.Event()

    async def reader():
        async with second.shared():
            entered.set()

    async with asyncio.timeout(5):
        async with first.exclusive():
            reading = asyncio.ensure_future(reader())
            with pytest.raises(TimeoutError):  # a window in which it would (wrongly) get in
                await asyncio.wait_for(asyncio.shield(entered.wait()), 0.1)
        await reading
    assert entered.is_set()
