"""The providers' side of the notification protocols, for tests and a local "provider".

:class:`FakeWechatPay` and :class:`FakeAlipay` hold their own RSA keys and produce notifications
exactly as the real providers do (same signed strings, real SHA256withRSA signatures, real
AES-256-GCM), so a verifier that accepts them speaks the real protocol. Nothing here is used in
production code paths.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from services.api.payments.alipay import BEIJING, signing_string
from services.api.payments.wechatpay import ALGORITHM, PAYMENT_EVENT, signed_message

_ALPHANUM = string.ascii_letters + string.digits


def generate_rsa_key(bits: int = 2048) -> RSAPrivateKey:
    """A fresh RSA key (the providers use 2048 bits)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def self_signed_certificate(
    key: RSAPrivateKey, serial: int, common_name: str = "Tenpay.com Root CA"
) -> bytes:
    """A PEM certificate for ``key`` with ``serial``, standing in for a platform certificate."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHANUM) for _ in range(n))


def rsa_sign(key: RSAPrivateKey, message: bytes) -> str:
    """Base64 SHA256withRSA (PKCS#1 v1.5), the signature both providers use."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


@dataclass
class FakeWechatPay:
    """WeChat Pay's side: a platform key with its serial, and the merchant's APIv3 key."""

    api_v3_key: str = field(default_factory=lambda: _random(32))
    serial: str = field(default_factory=lambda: uuid.uuid4().hex.upper()[:40])
    private_key: RSAPrivateKey = field(default_factory=generate_rsa_key)
    mchid: str = "1900000109"
    appid: str = "wxd678efh567hg6787"

    @property
    def public_key(self) -> RSAPublicKey:
        """The key a merchant configures for :attr:`serial`."""
        return self.private_key.public_key()

    def transaction(
        self,
        out_trade_no: str,
        total_fen: int,
        *,
        trade_state: str = "SUCCESS",
        currency: str = "CNY",
        success_time: str = "2026-11-21T10:34:56+08:00",
        attach: str | None = None,
    ) -> dict[str, Any]:
        """A decrypted transaction resource as in the JSAPI payment notification docs."""
        txn: dict[str, Any] = {
            "mchid": self.mchid,
            "appid": self.appid,
            "out_trade_no": out_trade_no,
            "transaction_id": "4200" + "".join(secrets.choice(string.digits) for _ in range(24)),
            "trade_type": "JSAPI",
            "trade_state": trade_state,
            "trade_state_desc": "支付成功" if trade_state == "SUCCESS" else trade_state,
            "bank_type": "CMC",
            "success_time": success_time,
            "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {
                "total": total_fen,
                "payer_total": total_fen,
                "currency": currency,
                "payer_currency": currency,
            },
        }
        if attach is not None:
            txn["attach"] = attach
        return txn

    def encrypt(self, document: dict[str, Any], associated_data: str = "transaction") -> dict[str, str]:
        """A ``resource`` object: the document under AEAD_AES_256_GCM with the APIv3 key."""
        nonce = _random(12)
        plain = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        sealed = AESGCM(self.api_v3_key.encode()).encrypt(
            nonce.encode(), plain, associated_data.encode() or None
        )
        return {
            "original_type": "transaction",
            "algorithm": ALGORITHM,
            "ciphertext": base64.b64encode(sealed).decode(),
            "associated_data": associated_data,
            "nonce": nonce,
        }

    def notification(
        self, transaction: dict[str, Any], *, now: datetime | None = None, event_type: str = PAYMENT_EVENT
    ) -> tuple[dict[str, str], bytes]:
        """Headers and raw body of the POST WeChat Pay sends to the notify_url."""
        envelope = {
            "id": str(uuid.uuid4()),
            "create_time": "2026-11-21T10:34:57+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": self.encrypt(transaction),
        }
        body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        return self.sign(body, now=now), body

    def sign(self, body: bytes, *, now: datetime | None = None) -> dict[str, str]:
        """The four ``Wechatpay-*`` headers for ``body`` sent at ``now``."""
        timestamp = str(int((now or datetime.now(UTC)).timestamp()))
        nonce = _random(32)
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Serial": self.serial,
            "Wechatpay-Signature": rsa_sign(self.private_key, signed_message(timestamp, nonce, body)),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Content-Type": "application/json",
        }


@dataclass
class FakeAlipay:
    """Alipay's side: the Alipay private key of one app."""

    app_id: str = "2021000117600000"
    seller_id: str = "2088102177846880"
    private_key: RSAPrivateKey = field(default_factory=generate_rsa_key)

    @property
    def public_key(self) -> RSAPublicKey:
        """The Alipay public key (支付宝公钥) a merchant configures."""
        return self.private_key.public_key()

    def notification(
        self,
        out_trade_no: str,
        total_amount: str,
        *,
        trade_status: str = "TRADE_SUCCESS",
        gmt_payment: datetime | None = None,
        passback: str | None = None,
        charset: str = "utf-8",
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """The decoded parameters of an asynchronous notification, signed with RSA2."""
        paid = (gmt_payment or datetime.now(UTC)).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        params = {
            "notify_time": paid,
            "notify_type": "trade_status_sync",
            "notify_id": _random(32),
            "app_id": self.app_id,
            "charset": charset,
            "version": "1.0",
            "trade_no": "2026" + "".join(secrets.choice(string.digits) for _ in range(24)),
            "out_trade_no": out_trade_no,
            "buyer_id": "2088102177846875",
            "seller_id": self.seller_id,
            "trade_status": trade_status,
            "total_amount": total_amount,
            "receipt_amount": total_amount,
            "subject": "电费充值",
            "gmt_create": paid,
            "gmt_payment": paid,
            "fund_bill_list": json.dumps([{"amount": total_amount, "fundChannel": "ALIPAYACCOUNT"}]),
            **(extra or {}),
        }
        if passback is not None:
            params["passback_params"] = quote(passback, safe="", encoding=charset)
        return self.sign(params)

    def sign(self, params: dict[str, str]) -> dict[str, str]:
        """``params`` with ``sign_type=RSA2`` and ``sign`` over :func:`signing_string`."""
        unsigned = {k: v for k, v in params.items() if k not in ("sign", "sign_type")}
        charset = unsigned.get("charset") or "utf-8"
        signature = rsa_sign(self.private_key, signing_string(unsigned).encode(charset))
        return {**unsigned, "sign_type": "RSA2", "sign": signature}

    @staticmethod
    def form_body(params: dict[str, str]) -> bytes:
        """The form-encoded POST body, in the notification's charset."""
        return urlencode(params, encoding=params.get("charset") or "utf-8").encode("ascii")
