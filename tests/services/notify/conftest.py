from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from services.notify.testing.provider_server import ProviderServer


@pytest.fixture(scope="session")
def provider_server() -> Iterator[ProviderServer]:
    with ProviderServer() as server:
        yield server


@pytest.fixture
def providers(provider_server: ProviderServer) -> Iterator[ProviderServer]:
    """The shared local provider server, reset for this test."""
    provider_server.state.reset()
    provider_server.state.delay_seconds = 0.6
    yield provider_server
    provider_server.state.reset()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=0.3) as client:
        yield client
