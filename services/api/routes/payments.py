"""Payment notifications from WeChat Pay and Alipay (public: the providers sign them)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response

from services.api import payment_notices
from services.api.context import ApiDep
from services.api.payments import PaymentNoticeError, PaymentSignatureError, alipay, wechatpay
from services.api.payments.base import NotifyAck
from services.api.problems import ERRORS, Problem

log = logging.getLogger(__name__)
router = APIRouter(prefix="/payments", tags=["payments"], responses={404: ERRORS[404]})
_ACKS: dict[int | str, dict[str, Any]] = {
    200: {"description": "acknowledged (WeChat Pay: JSON; Alipay: `success` or `failure`)"},
    400: {"description": "authentic but not a payment we can credit"},
    401: {"description": "the signature does not verify"},
    500: {"description": "not credited yet; the provider retries"},
}


def _send(ack: NotifyAck) -> Response:
    return Response(ack.body, ack.status_code, media_type=ack.media_type)


@router.post("/wechat/notify", responses=_ACKS, response_class=Response)
async def wechat_notify(api: ApiDep, request: Request) -> Response:
    """WeChat Pay v3 payment notification (notify_url)."""
    notifier = api.notifiers.wechat
    if notifier is None:
        raise Problem(404, "WeChat Pay is not configured")
    body = await request.body()
    try:
        notice = notifier.parse(dict(request.headers), body)
        await payment_notices.credit(api, notice)
    except PaymentSignatureError as exc:
        log.warning("WeChat Pay notify refused: %s", exc)
        return _send(wechatpay.ack_failure("签名错误", 401))
    except PaymentNoticeError as exc:
        log.warning("WeChat Pay notify not creditable: %s", exc)
        return _send(wechatpay.ack_failure("无法入账", 400))
    except payment_notices.UnknownAccount as exc:
        log.error("WeChat Pay notify: %s", exc)
        return _send(wechatpay.ack_failure("稍后重试", 500))
    return _send(wechatpay.ack_success())


@router.post("/alipay/notify", responses={200: _ACKS[200]}, response_class=Response)
async def alipay_notify(api: ApiDep, request: Request) -> Response:
    """Alipay asynchronous notification (notify_url); Alipay retries until it reads `success`."""
    notifier = api.notifiers.alipay
    if notifier is None:
        raise Problem(404, "Alipay is not configured")
    try:
        notice = notifier.parse_body(await request.body())
        await payment_notices.credit(api, notice)
    except (PaymentSignatureError, PaymentNoticeError, payment_notices.UnknownAccount) as exc:
        log.warning("Alipay notify not credited: %s", exc)
        return _send(alipay.ack_failure())
    return _send(alipay.ack_success())
