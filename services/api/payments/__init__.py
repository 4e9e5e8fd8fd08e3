"""Verification of payment notifications from WeChat Pay and Alipay (MISSION.md B6).

A route hands the raw request (headers and body bytes) to :class:`WechatPayNotifier` or
:class:`AlipayNotifier`; either returns a :class:`PaymentNotice` whose signature, freshness and
amount have been checked, or raises :class:`PaymentSignatureError` (not from the provider) or
:class:`PaymentNoticeError` (from the provider, but not a payment we can credit). The route then
answers with the provider's acknowledgement (``ack_*``) so the provider stops retrying.
"""

from services.api.payments.alipay import AlipayNotifier
from services.api.payments.base import (
    NotifyAck,
    PaymentError,
    PaymentNotice,
    PaymentNoticeError,
    PaymentSignatureError,
    yuan_to_fen,
)
from services.api.payments.wechatpay import WechatPayNotifier

__all__ = [
    "AlipayNotifier",
    "NotifyAck",
    "PaymentError",
    "PaymentNotice",
    "PaymentNoticeError",
    "PaymentSignatureError",
    "WechatPayNotifier",
    "yuan_to_fen",
]
