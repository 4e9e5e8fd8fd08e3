"""One place that turns httpx transport failures and 5xx/429 into typed provider errors."""

from __future__ import annotations

from typing import Any

import httpx

from services.notify.providers.base import ErrorKind, provider_error


async def request(
    provider: str, client: httpx.AsyncClient, method: str, url: str, **kw: Any
) -> httpx.Response:
    """Send; raise retryable errors for timeouts, network faults, HTTP 429 and 5xx without a body
    the provider's own parser could read (the caller classifies every other answer)."""
    try:
        response = await client.request(method, url, **kw)
    except httpx.TimeoutException as exc:
        raise provider_error(provider, ErrorKind.TIMEOUT, type(exc).__name__, str(exc)) from exc
    except httpx.TransportError as exc:
        raise provider_error(provider, ErrorKind.NETWORK, type(exc).__name__, str(exc)) from exc
    if response.status_code == 429:
        raise provider_error(provider, ErrorKind.THROTTLED, "http_429", response.text[:200])
    if response.status_code >= 500 and not _is_json(response):
        raise provider_error(provider, ErrorKind.SERVER, f"http_{response.status_code}", response.text[:200])
    return response


async def post(provider: str, client: httpx.AsyncClient, url: str, **kw: Any) -> httpx.Response:
    """POST through :func:`request`."""
    return await request(provider, client, "POST", url, **kw)


def _is_json(response: httpx.Response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True
