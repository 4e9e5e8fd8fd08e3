from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.protocols.simulator.clock import ManualClock
from libs.protocols.simulator.runtime import Site

from .sites import running_site


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def site(clock: ManualClock) -> AsyncIterator[Site]:
    async with running_site(clock) as s:
        yield s
