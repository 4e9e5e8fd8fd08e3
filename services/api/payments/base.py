"""What every provider's notification becomes: a verified :class:`PaymentNotice`, or an error."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate

Provider = Literal["wechat", "alipay"]

_YUAN = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]{1,2}))?")


class PaymentError(ValueError):
    """Base of the errors raised while verifying a payment notification."""


class PaymentSignatureError(PaymentError):
    """The notification cannot be shown to come from the provider: bad or missing signature,
    unknown certificate serial, stale timestamp, or a ciphertext that fails authentication.

    Never credit anything on this error; answer with a failure acknowledgement.
    """


class PaymentNoticeError(PaymentError):
    """Authentic but unusable: malformed fields, not a success state, another merchant's app id,
    or a currency other than CNY."""


@dataclass(frozen=True)
class PaymentNotice:
    """A verified payment: ``order_no`` is our ``out_trade_no``, money is integer fen.

    The same payment may be notified more than once (providers retry until acknowledged, and
    Alipay sends TRADE_SUCCESS then TRADE_FINISHED for one trade): deduplicate on
    ``(provider, provider_txn_id)`` before crediting.
    """

    provider: Provider
    order_no: str
    provider_txn_id: str
    amount_fen: int
    currency: str
    paid_at: datetime
    attach: str | None
    raw: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class NotifyAck:
    """The HTTP response the notification endpoint must send back to the provider."""

    status_code: int
    body: bytes
    media_type: str


def yuan_to_fen(text: str) -> int:
    """An amount in yuan as written by a provider (``"0.01"``, ``"100.10"``, ``"5"``) → fen, exactly.

    At most two decimals, no sign, no exponent, no spaces; anything else is a
    :class:`PaymentNoticeError`.
    """
    match = _YUAN.fullmatch(text)
    if match is None:
        raise PaymentNoticeError(f"amount {text!r} is not a yuan amount with at most two decimals")
    whole, cents = match.group(1), match.group(2) or ""
    return int(whole) * 100 + int(cents.ljust(2, "0"))


def load_public_key(pem: bytes | str) -> RSAPublicKey:
    """An RSA public key from PEM: a certificate (WeChat Pay platform certificate, Alipay public
    key certificate) or a bare ``PUBLIC KEY`` (WeChat Pay public key, Alipay public key). The
    header-less base64 one-liner the Alipay console shows is accepted too."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key: object
    if b"-----BEGIN CERTIFICATE-----" in data:
        key = load_pem_x509_certificate(data).public_key()
    elif b"-----BEGIN" in data:
        key = load_pem_public_key(data)
    else:
        key = load_der_public_key(base64.b64decode(b"".join(data.split()), validate=True))
    if not isinstance(key, RSAPublicKey):
        raise ValueError("expected an RSA public key")
    return key
