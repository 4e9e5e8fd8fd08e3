"""Alipay asynchronous payment notifications (异步通知), RSA2 signatures.

The protocol, from the Alipay open platform documentation:

- **Delivery** (异步通知说明, ``opendocs.alipay.com/open/203/105286``): Alipay POSTs
  ``application/x-www-form-urlencoded`` parameters to the order's ``notify_url``: ``app_id``,
  ``charset``, ``sign_type``, ``sign``, ``trade_no`` (Alipay's id), ``out_trade_no`` (ours),
  ``trade_status``, ``total_amount`` (yuan, 2 decimals), ``gmt_payment``
  (``yyyy-MM-dd HH:mm:ss``, Beijing time), ``seller_id``, ``passback_params`` … It retries
  (4m, 10m, 10m, 1h, 2h, 6h, 15h) until the body of the answer is the literal ``success``.
- **Paid states** (交易状态): ``TRADE_SUCCESS`` and ``TRADE_FINISHED`` are paid; one trade can
  notify both, so deduplicate on ``trade_no``. ``WAIT_BUYER_PAY`` and ``TRADE_CLOSED`` are not.
- **Verification** (异步通知验签, ``opendocs.alipay.com/common/02mse7``): drop ``sign`` and
  ``sign_type``, URL-decode the values, sort the rest by key, join as ``k=v&k=v`` and verify
  ``sign`` (base64) with SHA256withRSA (``sign_type=RSA2``) and the Alipay public key, in the
  notification's ``charset``. Parameters with empty values are left out, as the signing SDKs
  do. The merchant must then check ``app_id`` (and may check ``seller_id``) and the amount.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from services.api.payments.base import (
    NotifyAck,
    PaymentNotice,
    PaymentNoticeError,
    PaymentSignatureError,
    yuan_to_fen,
)

PAID_STATES = frozenset({"TRADE_SUCCESS", "TRADE_FINISHED"})
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def ack_success() -> NotifyAck:
    """The answer that stops Alipay's retries: the literal body ``success``."""
    return NotifyAck(200, b"success", "text/plain")


def ack_failure() -> NotifyAck:
    """The literal ``failure``: Alipay notifies again later (any body but ``success`` does)."""
    return NotifyAck(200, b"failure", "text/plain")


def signing_string(params: Mapping[str, str]) -> str:
    """The string Alipay signs: every non-empty parameter but ``sign``/``sign_type``, sorted, ``k=v&…``."""
    items = sorted((k, v) for k, v in params.items() if k not in ("sign", "sign_type") and v != "")
    return "&".join(f"{k}={v}" for k, v in items)


def parse_form(body: bytes) -> dict[str, str]:
    """Decode a notification body; values are URL-decoded in the ``charset`` it names (default UTF-8).

    A repeated key is a :class:`PaymentNoticeError`: the signature would cover only one of them.
    """
    try:
        text = body.decode("ascii")
        probe = dict(parse_qsl(text, keep_blank_values=True, encoding="latin-1"))
        charset = probe.get("charset") or "utf-8"
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
    except (UnicodeDecodeError, LookupError) as exc:
        raise PaymentNoticeError(f"notification body is not a form in its charset: {exc}") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise PaymentNoticeError("notification repeats a parameter")
    return params


class AlipayNotifier:
    """Verifies and decodes Alipay payment notifications for one application (``app_id``).

    ``alipay_public_key`` is the *Alipay* public key of the app (支付宝公钥), not the app's own.
    ``seller_id`` (the merchant's 2088… PID), when given, must match too.
    """

    def __init__(self, app_id: str, alipay_public_key: RSAPublicKey, *, seller_id: str | None = None) -> None:
        self._app_id = app_id
        self._key = alipay_public_key
        self._seller_id = seller_id

    def verify(self, params: Mapping[str, str]) -> None:
        """Check ``sign`` over the decoded ``params``; :class:`PaymentSignatureError` if it fails."""
        sign_type = params.get("sign_type", "RSA2")
        if sign_type != "RSA2":
            raise PaymentSignatureError(f"sign_type {sign_type!r} is not RSA2 (SHA256withRSA)")
        sign = params.get("sign")
        if not sign:
            raise PaymentSignatureError("notification has no sign")
        charset = params.get("charset") or "utf-8"
        try:
            message = signing_string(params).encode(charset)
            self._key.verify(
                base64.b64decode(sign, validate=True), message, padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, binascii.Error, ValueError, LookupError):
            raise PaymentSignatureError("Alipay sign does not verify") from None

    def parse(self, params: Mapping[str, str]) -> PaymentNotice:
        """Verify decoded parameters and return the payment they report.

        Raises :class:`PaymentSignatureError`, or :class:`PaymentNoticeError` for a foreign
        ``app_id``/``seller_id``, a state that is not paid, or a malformed amount or time.
        """
        self.verify(params)
        if params.get("app_id") != self._app_id:
            raise PaymentNoticeError(f"app_id {params.get('app_id')!r} is not ours ({self._app_id!r})")
        if self._seller_id is not None and params.get("seller_id") != self._seller_id:
            raise PaymentNoticeError(f"seller_id {params.get('seller_id')!r} is not ours")
        status = params.get("trade_status")
        if status not in PAID_STATES:
            raise PaymentNoticeError(f"trade_status {status!r} is not a payment")
        order_no, trade_no = params.get("out_trade_no"), params.get("trade_no")
        if not order_no or not trade_no:
            raise PaymentNoticeError("out_trade_no and trade_no are required")
        amount_fen = yuan_to_fen(params.get("total_amount", ""))
        if amount_fen <= 0:
            raise PaymentNoticeError("total_amount must be positive")
        # Cross-border apps may settle in another currency; domestic notices carry none (CNY).
        currency = params.get("trans_currency") or "CNY"
        if currency != "CNY":
            raise PaymentNoticeError(f"currency {currency!r} is not CNY")
        passback = params.get("passback_params")
        raw: dict[str, Any] = dict(params)
        return PaymentNotice(
            provider="alipay",
            order_no=order_no,
            provider_txn_id=trade_no,
            amount_fen=amount_fen,
            currency=currency,
            paid_at=_beijing_time(params.get("gmt_payment")),
            # passback_params is URL-encoded by the merchant when ordering and returned as is.
            attach=unquote(passback, encoding=params.get("charset") or "utf-8") if passback else None,
            raw=raw,
        )

    def parse_body(self, body: bytes) -> PaymentNotice:
        """:meth:`parse` for the raw form-encoded request body."""
        return self.parse(parse_form(body))


def _beijing_time(value: str | None) -> datetime:
    if not value:
        raise PaymentNoticeError("gmt_payment is missing")
    try:
        moment = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise PaymentNoticeError(f"gmt_payment {value!r} is not yyyy-MM-dd HH:mm:ss") from None
    return moment.replace(tzinfo=BEIJING)
