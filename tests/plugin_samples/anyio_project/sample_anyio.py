"""anyio pytest-plugin tests (asyncio backend) that must run on ferroloop."""

import asyncio

import anyio
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_task_group_on_ferroloop():
    results = []

    async def worker(n):
        await anyio.sleep(0.01 * n)
        results.append(n)

    async with anyio.create_task_group() as tg:
        for n in (3, 1, 2):
            tg.start_soon(worker, n)
    assert results == [1, 2, 3]
    assert type(asyncio.get_running_loop()).__module__.startswith("ferroloop")
