"""pytest-asyncio tests with ``@pytest.mark.ferroloop(virtual_time=True)``: a marked test in
a module-scoped loop gets a virtual loop of its own (pytest-asyncio 1.4+), the unmarked tests
around it share a real-time one. Also run by tests/test_virtual_time.py."""

import asyncio
import time

import pytest
import pytest_asyncio


def now():
    return asyncio.get_running_loop().time()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared():
    return asyncio.get_running_loop()


@pytest.mark.asyncio(loop_scope="module")
async def test_real_first(shared):
    assert asyncio.get_running_loop() is shared
    assert not shared._is_virtual_time()


@pytest.mark.ferroloop(virtual_time=True)
@pytest.mark.asyncio(loop_scope="module")
async def test_virtual_in_module_scope(shared):
    start = time.monotonic()
    await asyncio.sleep(3600)
    assert now() == 3600.0
    assert asyncio.get_running_loop() is shared  # the module fixture, set up on this loop
    assert time.monotonic() - start < 1.0


@pytest.mark.asyncio(loop_scope="module")
async def test_real_after(shared):
    assert not asyncio.get_running_loop()._is_virtual_time()


@pytest.mark.ferroloop(virtual_time=True, wait_for_executor=False)
@pytest.mark.asyncio
async def test_virtual_function_scope():
    await asyncio.sleep(60)
    assert now() == 60.0
