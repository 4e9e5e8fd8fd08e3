"""The two ports of the notify service: an SMS gateway and WeChat template messages.

Every adapter raises :class:`RetryableProviderError` for faults that may pass (throttling,
5xx, timeout, network) and :class:`PermanentProviderError` for faults a retry cannot fix
(bad signature or credentials, invalid recipient, template not approved), so the delivery
policy decides on the class alone and never parses provider codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class ErrorKind(StrEnum):
    """Why a provider refused or failed a message."""

    THROTTLED = "throttled"
    SERVER = "server"
    TIMEOUT = "timeout"
    NETWORK = "network"
    SIGNATURE = "signature"  # bad signature, unknown key, wrong app secret
    INVALID_RECIPIENT = "invalid_recipient"
    TEMPLATE = "template"  # template or SMS sign name not approved / unknown
    REJECTED = "rejected"  # any other permanent refusal (balance, content, …)


RETRYABLE_KINDS = frozenset({ErrorKind.THROTTLED, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.NETWORK})


class ProviderError(Exception):
    """A provider did not accept a message; ``code`` is the provider's own code."""

    retryable: bool = False

    def __init__(self, provider: str, kind: ErrorKind, code: str = "", message: str = "") -> None:
        super().__init__(f"{provider}: {kind} {code} {message}".strip())
        self.provider = provider
        self.kind = kind
        self.code = code
        self.message = message


class RetryableProviderError(ProviderError):
    """Throttled, 5xx, timeout or network: the same request may succeed later."""

    retryable = True


class PermanentProviderError(ProviderError):
    """Bad signature, invalid recipient, unapproved template…: retrying cannot help."""


def provider_error(provider: str, kind: ErrorKind, code: str = "", message: str = "") -> ProviderError:
    """The right error class for ``kind``."""
    cls = RetryableProviderError if kind in RETRYABLE_KINDS else PermanentProviderError
    return cls(provider, kind, code, message)


@dataclass(frozen=True)
class ProviderReceipt:
    """The provider accepted the message: ``message_id`` is its id (BizId, SerialNo, msgid)."""

    provider: str
    message_id: str
    request_id: str = ""


class SmsSender(Protocol):
    """Sends one templated SMS. ``params`` fill the provider-side approved template; for
    providers with positional parameters (Tencent) their insertion order is the order."""

    provider: str

    async def send(
        self, phone: str, template_code: str, params: Mapping[str, str], sign_name: str
    ) -> ProviderReceipt: ...


class WeChatSender(Protocol):
    """Sends one official-account template message; ``data`` maps keyword → value."""

    provider: str

    async def send(
        self, openid: str, template_id: str, data: Mapping[str, str], url: str | None = None
    ) -> ProviderReceipt: ...
