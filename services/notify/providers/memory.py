"""In-memory adapters of both ports, for tests and the laptop stack.

They apply the same rules a real provider does (phone format, approved templates,
subscribed openids) and can be told to fail, so they pass the same contract tests as the
httpx adapters against the local provider server.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.notify.providers.base import ErrorKind, ProviderReceipt, provider_error

PHONE = re.compile(r"^(\+86)?1\d{10}$|^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class Sent:
    """One accepted message: ``to`` is the phone or openid, ``params`` its values."""

    to: str
    template: str
    params: dict[str, str]
    sign_name: str = ""
    url: str | None = None
    message_id: str = ""


@dataclass
class Faults:
    """Failures queued for the next calls, consumed one per call in order."""

    queued: deque[ErrorKind] = field(default_factory=deque)

    def fail_next(self, kind: ErrorKind, times: int = 1) -> None:
        self.queued.extend([kind] * times)

    def take(self) -> ErrorKind | None:
        return self.queued.popleft() if self.queued else None


class _Memory:
    provider = "memory"

    def __init__(self, unapproved_templates: frozenset[str] = frozenset()) -> None:
        self.sent: list[Sent] = []
        self.faults = Faults()
        self.unapproved = set(unapproved_templates)
        self._ids = itertools.count(1)

    def _check(self, template: str) -> None:
        kind = self.faults.take()
        if kind is not None:
            raise provider_error(self.provider, kind, f"injected_{kind}")
        if template in self.unapproved:
            raise provider_error(self.provider, ErrorKind.TEMPLATE, "template_unapproved", template)

    def _accept(self, sent: Sent) -> ProviderReceipt:
        message_id = f"{self.provider}-{next(self._ids)}"
        self.sent.append(Sent(sent.to, sent.template, sent.params, sent.sign_name, sent.url, message_id))
        return ProviderReceipt(self.provider, message_id)


class InMemorySmsSender(_Memory):
    """:class:`SmsSender` keeping what it accepted in :attr:`sent`."""

    provider = "memory-sms"

    async def send(
        self, phone: str, template_code: str, params: Mapping[str, str], sign_name: str
    ) -> ProviderReceipt:
        self._check(template_code)
        if not PHONE.match(phone):
            raise provider_error(self.provider, ErrorKind.INVALID_RECIPIENT, "invalid_phone", phone)
        return self._accept(Sent(phone, template_code, dict(params), sign_name))


class InMemoryWeChatSender(_Memory):
    """:class:`WeChatSender`; openids in ``unsubscribed`` are refused like WeChat's 43004."""

    provider = "memory-wechat"

    def __init__(
        self, unapproved_templates: frozenset[str] = frozenset(), unsubscribed: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(unapproved_templates)
        self.unsubscribed = set(unsubscribed)

    async def send(
        self, openid: str, template_id: str, data: Mapping[str, str], url: str | None = None
    ) -> ProviderReceipt:
        self._check(template_id)
        if openid in self.unsubscribed or not openid:
            raise provider_error(self.provider, ErrorKind.INVALID_RECIPIENT, "43004", openid)
        return self._accept(Sent(openid, template_id, dict(data), url=url))
