"""WeChat official-account template messages (``/cgi-bin/message/template/send``).

The access_token from ``GET /cgi-bin/token?grant_type=client_credential`` is cached until
``refresh_margin`` seconds before its ``expires_in`` (7200 s in production), fetched once
under a lock however many sends wait for it, and dropped and fetched again — with one retry
of the send — when WeChat answers 40001 / 40014 / 42001 (invalid or expired token, e.g.
because another process of the same app fetched a newer one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from services.notify.providers.base import ErrorKind, ProviderReceipt, provider_error
from services.notify.providers.http import request

PROVIDER = "wechat"
DEFAULT_BASE_URL = "https://api.weixin.qq.com"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})

_KINDS: dict[int, ErrorKind] = {
    -1: ErrorKind.SERVER,  # system busy
    45009: ErrorKind.THROTTLED,  # api daily quota
    45011: ErrorKind.THROTTLED,  # api minute quota
    45047: ErrorKind.THROTTLED,
    40013: ErrorKind.SIGNATURE,  # invalid appid
    40125: ErrorKind.SIGNATURE,  # invalid appsecret
    40164: ErrorKind.SIGNATURE,  # caller ip not whitelisted
    40001: ErrorKind.SIGNATURE,  # still invalid after a fresh token
    40014: ErrorKind.SIGNATURE,
    42001: ErrorKind.SIGNATURE,
    40003: ErrorKind.INVALID_RECIPIENT,  # invalid openid
    43004: ErrorKind.INVALID_RECIPIENT,  # user not subscribed
    43019: ErrorKind.INVALID_RECIPIENT,  # user blocked the account
    40037: ErrorKind.TEMPLATE,  # invalid template_id
    47003: ErrorKind.TEMPLATE,  # data does not fit the template
}


def _error(errcode: int, errmsg: str) -> Exception:
    return provider_error(PROVIDER, _KINDS.get(errcode, ErrorKind.REJECTED), str(errcode), errmsg)


class WeChatTemplateSender:
    """:class:`WeChatSender` over the official-account HTTP API."""

    provider = PROVIDER

    def __init__(
        self,
        client: httpx.AsyncClient,
        appid: str,
        secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._appid = appid
        self._secret = secret
        self._base = base_url.rstrip("/")
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.token_fetches = 0

    async def access_token(self) -> str:
        """The cached token, fetched when missing or about to expire."""
        async with self._lock:
            if self._token is None or self._clock() >= self._valid_until:
                await self._fetch_token()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (if it is still the cached one)."""
        if self._token == token:
            self._token = None

    async def _fetch_token(self) -> None:
        params = {"grant_type": "client_credential", "appid": self._appid, "secret": self._secret}
        response = await request(PROVIDER, self._client, "GET", f"{self._base}/cgi-bin/token", params=params)
        body = _json(response)
        if "access_token" not in body:
            raise _error(int(body.get("errcode", -1)), str(body.get("errmsg", "no access_token")))
        self.token_fetches += 1
        expires_in = float(body.get("expires_in", 7200))
        self._token = str(body["access_token"])
        self._valid_until = self._clock() + max(expires_in - self._margin, expires_in / 2)

    async def send(
        self, openid: str, template_id: str, data: Mapping[str, str], url: str | None = None
    ) -> ProviderReceipt:
        message: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if url:
            message["url"] = url
        for attempt in (1, 2):
            token = await self.access_token()
            response = await request(
                PROVIDER,
                self._client,
                "POST",
                f"{self._base}/cgi-bin/message/template/send",
                params={"access_token": token},
                json=message,
            )
            body = _json(response)
            errcode = int(body.get("errcode", -1))
            if errcode == 0:
                return ProviderReceipt(PROVIDER, str(body.get("msgid", "")))
            if errcode in TOKEN_ERRORS and attempt == 1:
                self.invalidate(token)
                continue
            raise _error(errcode, str(body.get("errmsg", "")))
        raise AssertionError("unreachable")  # pragma: no cover


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = ErrorKind.SERVER if response.status_code >= 500 else ErrorKind.REJECTED
        raise provider_error(PROVIDER, kind, f"http_{response.status_code}", response.text[:200])
    return body
