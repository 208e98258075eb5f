"""unittest.IsolatedAsyncioTestCase tests that must run on ferroloop (collected by pytest)."""

import asyncio
import unittest


class FerroloopCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.setup_loop = type(asyncio.get_running_loop()).__module__

    async def test_runs_on_ferroloop(self):
        await asyncio.sleep(0)
        self.assertTrue(self.setup_loop.startswith("ferroloop"), self.setup_loop)
        loop = asyncio.get_running_loop()
        self.assertTrue(type(loop).__module__.startswith("ferroloop"), type(loop))
