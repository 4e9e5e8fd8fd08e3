"""WeChat Pay API v3 payment notifications (支付结果通知 / 支付成功回调通知), direct-merchant mode.

The protocol, from the WeChat Pay API v3 documentation:

1. **Signature** (签名验证, ``wiki/doc/apiv3/wechatpay/wechatpay4_1.shtml``; callbacks are
   signed like responses, ``wechatpay3_3.shtml`` §3). Headers ``Wechatpay-Timestamp`` (unix
   seconds), ``Wechatpay-Nonce``, ``Wechatpay-Serial`` (serial of the platform certificate, or
   the ``PUB_KEY_ID_…`` of the WeChat Pay public key) and ``Wechatpay-Signature`` (base64
   SHA256withRSA, PKCS#1 v1.5) over ``"{timestamp}\\n{nonce}\\n{body}\\n"``, where ``body`` is
   the raw request body — verify the bytes, never re-serialised JSON. The merchant should reject
   timestamps more than 5 minutes off. WeChat Pay also sends probes whose signature begins with
   ``WECHATPAY/SIGNTEST/`` to check that merchants verify; they fail verification like any
   forgery.
2. **Decryption** (证书和回调报文解密, ``wechatpay4_2.shtml``). ``resource`` holds
   ``algorithm`` = ``AEAD_AES_256_GCM``, ``ciphertext`` (base64 of ciphertext ‖ 16-byte tag),
   ``nonce`` (12 ASCII characters) and ``associated_data``; the key is the 32-character APIv3
   key set in the merchant platform.
3. **Payload** (JSAPI/Native/APP 支付通知, ``apis/chapter3_1_5.shtml``). ``event_type``
   ``TRANSACTION.SUCCESS``; the decrypted transaction carries ``mchid``, ``appid``,
   ``out_trade_no``, ``transaction_id``, ``trade_state`` (only ``SUCCESS`` is paid),
   ``success_time`` (RFC 3339, ``+08:00``), ``attach`` and ``amount`` {``total`` in fen,
   ``currency``}.
4. **Acknowledgement** (通知应答, ``apis/chapter3_3_5.shtml``). Success: HTTP 200 or 204 (a body
   is not needed; we send ``{"code":"SUCCESS","message":"成功"}`` with 200, which every version
   of the docs accepts). Failure: 4XX/5XX with ``{"code":"FAIL","message":"…"}``; WeChat Pay
   then retries (15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h over 24h).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.api.payments.base import NotifyAck, PaymentNotice, PaymentNoticeError, PaymentSignatureError

ALGORITHM = "AEAD_AES_256_GCM"
PAYMENT_EVENT = "TRANSACTION.SUCCESS"
_HEADERS = ("wechatpay-timestamp", "wechatpay-nonce", "wechatpay-serial", "wechatpay-signature")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def signed_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes WeChat Pay signs for a callback: ``timestamp\\nnonce\\nbody\\n`` (签名验证 §构造验签名串)."""
    return timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"


class WechatPayNotifier:
    """Verifies and decodes payment notifications for one merchant (商户号).

    ``platform_keys`` maps each ``Wechatpay-Serial`` value in use (platform certificate serials
    and/or the public key id) to its RSA public key; keep the old one during a rotation.
    ``mchid``/``appid``, when given, must match the transaction. ``clock`` returns an aware now.
    """

    def __init__(
        self,
        api_v3_key: str | bytes,
        platform_keys: Mapping[str, RSAPublicKey],
        *,
        mchid: str | None = None,
        appid: str | None = None,
        tolerance: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        key = api_v3_key.encode() if isinstance(api_v3_key, str) else api_v3_key
        if len(key) != 32:
            raise ValueError("the APIv3 key is 32 bytes (32 ASCII characters)")
        self._aead = AESGCM(key)
        self._keys = dict(platform_keys)
        self._mchid = mchid
        self._appid = appid
        self._tolerance = tolerance
        self._clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Check the signature headers against the raw ``body``; return the parsed envelope.

        Header names are matched case-insensitively. Raises :class:`PaymentSignatureError` for a
        missing header, unknown serial, stale or future timestamp, or a bad signature.
        """
        lower = {name.lower(): value for name, value in headers.items()}
        missing = [name for name in _HEADERS if not lower.get(name)]
        if missing:
            raise PaymentSignatureError(f"missing headers: {', '.join(missing)}")
        timestamp, nonce = lower["wechatpay-timestamp"], lower["wechatpay-nonce"]
        serial, signature = lower["wechatpay-serial"], lower["wechatpay-signature"]
        key = self._keys.get(serial.strip())
        if key is None:
            raise PaymentSignatureError(f"unknown Wechatpay-Serial {serial!r}")
        if not timestamp.isdigit():
            raise PaymentSignatureError(f"Wechatpay-Timestamp {timestamp!r} is not unix seconds")
        sent = datetime.fromtimestamp(int(timestamp), UTC)
        if abs(self._clock() - sent) > self._tolerance:
            raise PaymentSignatureError(f"Wechatpay-Timestamp {timestamp} is outside ±{self._tolerance}")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
            key.verify(
                raw_signature, signed_message(timestamp, nonce, body), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, binascii.Error, ValueError):
            raise PaymentSignatureError("Wechatpay-Signature does not verify") from None
        try:
            envelope = json.loads(body)
        except ValueError as exc:
            raise PaymentNoticeError(f"body is not JSON: {exc}") from None
        if not isinstance(envelope, dict):
            raise PaymentNoticeError("body is not a JSON object")
        return envelope

    def decrypt(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Decrypt a notification's ``resource`` (AEAD_AES_256_GCM with the APIv3 key) to JSON.

        A ciphertext that fails GCM authentication (wrong APIv3 key, tampering) raises
        :class:`PaymentSignatureError`.
        """
        if resource.get("algorithm") != ALGORITHM:
            raise PaymentNoticeError(f"resource algorithm {resource.get('algorithm')!r} is not {ALGORITHM}")
        ciphertext, nonce = resource.get("ciphertext"), resource.get("nonce")
        associated = resource.get("associated_data") or ""
        if not isinstance(ciphertext, str) or not isinstance(nonce, str) or not isinstance(associated, str):
            raise PaymentNoticeError("resource needs string ciphertext, nonce and associated_data")
        try:
            data = base64.b64decode(ciphertext, validate=True)
            plain = self._aead.decrypt(nonce.encode(), data, associated.encode() or None)
        except binascii.Error:
            raise PaymentNoticeError("resource ciphertext is not base64") from None
        except (InvalidTag, ValueError):
            raise PaymentSignatureError(
                "resource fails AES-GCM authentication (wrong APIv3 key or tampered ciphertext)"
            ) from None
        try:
            document = json.loads(plain)
        except ValueError as exc:
            raise PaymentNoticeError(f"decrypted resource is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise PaymentNoticeError("decrypted resource is not a JSON object")
        return document

    def parse(self, headers: Mapping[str, str], body: bytes) -> PaymentNotice:
        """Verify, decrypt and check a payment notification; return the payment it reports.

        Raises :class:`PaymentSignatureError` or :class:`PaymentNoticeError` (not
        ``TRANSACTION.SUCCESS``, ``trade_state`` other than SUCCESS, foreign mchid/appid,
        currency other than CNY, malformed amount or time).
        """
        envelope = self.verify(headers, body)
        if envelope.get("event_type") != PAYMENT_EVENT:
            raise PaymentNoticeError(f"event_type {envelope.get('event_type')!r} is not {PAYMENT_EVENT}")
        resource = envelope.get("resource")
        if not isinstance(resource, dict):
            raise PaymentNoticeError("notification has no resource object")
        txn = self.decrypt(resource)
        for name, expected in (("mchid", self._mchid), ("appid", self._appid)):
            if expected is not None and txn.get(name) != expected:
                raise PaymentNoticeError(f"{name} {txn.get(name)!r} is not ours ({expected!r})")
        if txn.get("trade_state") != "SUCCESS":
            raise PaymentNoticeError(f"trade_state {txn.get('trade_state')!r} is not SUCCESS")
        amount = txn.get("amount")
        total = amount.get("total") if isinstance(amount, dict) else None
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise PaymentNoticeError(f"amount.total {total!r} is not a positive integer of fen")
        currency = amount.get("currency") if isinstance(amount, dict) else None
        if currency != "CNY":
            raise PaymentNoticeError(f"currency {currency!r} is not CNY")
        order_no, txn_id = txn.get("out_trade_no"), txn.get("transaction_id")
        if not isinstance(order_no, str) or not order_no or not isinstance(txn_id, str) or not txn_id:
            raise PaymentNoticeError("out_trade_no and transaction_id are required")
        attach = txn.get("attach")
        return PaymentNotice(
            provider="wechat",
            order_no=order_no,
            provider_txn_id=txn_id,
            amount_fen=total,
            currency=currency,
            paid_at=_rfc3339(txn.get("success_time")),
            attach=attach if isinstance(attach, str) and attach else None,
            raw=txn,
        )


def _rfc3339(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PaymentNoticeError(f"success_time {value!r} is missing")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PaymentNoticeError(f"success_time {value!r} is not RFC 3339") from None
    if moment.tzinfo is None:
        raise PaymentNoticeError(f"success_time {value!r} has no UTC offset")
    return moment


def ack_success() -> NotifyAck:
    """The acknowledgement that stops WeChat Pay's retries: HTTP 200 ``{"code":"SUCCESS"}``."""
    body = json.dumps({"code": "SUCCESS", "message": "成功"}, ensure_ascii=False).encode()
    return NotifyAck(200, body, "application/json")


def ack_failure(message: str = "失败", status_code: int = 500) -> NotifyAck:
    """A failure acknowledgement (4XX/5XX with ``{"code":"FAIL","message":…}``); WeChat Pay retries.

    Use 401 for a bad signature, 400 for an unusable notice, 500 when our own processing failed.
    ``message`` is limited to 64 characters by the docs.
    """
    if not 400 <= status_code <= 599:
        raise ValueError("a failure acknowledgement is a 4XX or 5XX status")
    body = json.dumps({"code": "FAIL", "message": message[:64]}, ensure_ascii=False).encode()
    return NotifyAck(status_code, body, "application/json")
