"""Crediting verified payment notifications (B6): a WeChat Pay or Alipay notice becomes a
``RechargeAccepted`` of the amount actually paid.

The account travels with the order: when the API (or a kiosk / mini-program backend) creates
the provider order it sets WeChat ``attach`` / Alipay ``passback_params`` to
``{"project_id": …, "account_id": …}``; the provider signs it back in the notice, so it cannot
be forged. The recharge's idempotency key is ``<provider>:<provider transaction id>``, so the
provider's retries and Alipay's TRADE_SUCCESS + TRADE_FINISHED pair credit once.
"""

from __future__ import annotations

import json
import logging

from libs.events import billing as bil
from libs.events.base import event_id_for
from services.api.context import Api, Notifiers
from services.api.payments import AlipayNotifier, PaymentNotice, PaymentNoticeError, WechatPayNotifier
from services.api.payments.base import load_public_key
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)


def notifiers_from(settings: ApiSettings) -> Notifiers:
    """Notifiers for the providers configured in ``settings``."""
    wechat = alipay = None
    v3_key = settings.api_wechatpay_api_v3_key.get_secret_value()
    if v3_key and settings.api_wechatpay_platform_key_file and settings.api_wechatpay_serial:
        key = load_public_key(settings.api_wechatpay_platform_key_file.read_bytes())
        wechat = WechatPayNotifier(
            v3_key, {settings.api_wechatpay_serial: key},
            mchid=settings.api_wechatpay_mchid or None, appid=settings.api_wechatpay_appid or None,
        )  # fmt: skip
    if settings.api_alipay_app_id and settings.api_alipay_public_key_file:
        key = load_public_key(settings.api_alipay_public_key_file.read_bytes())
        alipay = AlipayNotifier(
            settings.api_alipay_app_id, key, seller_id=settings.api_alipay_seller_id or None
        )
    return Notifiers(wechat, alipay)


def order_attach(project_id: str, account_id: str) -> str:
    """The ``attach`` / ``passback_params`` to set when creating a provider order."""
    return json.dumps({"project_id": project_id, "account_id": account_id}, separators=(",", ":"))


class UnknownAccount(Exception):
    """The notice names an account the read model does not have (yet): let the provider retry."""


def _target(notice: PaymentNotice) -> tuple[str, str]:
    try:
        doc = json.loads(notice.attach or "")
        project_id, account_id = doc["project_id"], doc["account_id"]
    except (ValueError, TypeError, KeyError):
        raise PaymentNoticeError(f"order {notice.order_no}: attach does not name an account") from None
    if not isinstance(project_id, str) or not isinstance(account_id, str):
        raise PaymentNoticeError(f"order {notice.order_no}: attach does not name an account")
    return project_id, account_id


async def credit(api: Api, notice: PaymentNotice) -> str:
    """Publish the recharge of a verified notice (once per provider transaction); its event id."""
    project_id, account_id = _target(notice)
    if (project_id, account_id) not in api.views.accounts:
        raise UnknownAccount(f"order {notice.order_no}: account {project_id}/{account_id} unknown")
    key = f"{notice.provider}:{notice.provider_txn_id}"
    event_id = event_id_for(project_id, "money", key)
    if event_id not in api.views.money:
        await api.writer.publish(bil.RechargeAccepted(
            event_id=event_id, project_id=project_id, subject_id=account_id, account_id=account_id,
            amount_fen=notice.amount_fen, idempotency_key=key, operator_id=f"payment:{notice.provider}",
            channel=notice.provider, payment_order_id=notice.order_no, time=notice.paid_at,
        ))  # fmt: skip
        log.info("credited %s order %s: %d fen to %s/%s", notice.provider, notice.order_no,
                 notice.amount_fen, project_id, account_id)  # fmt: skip
    return event_id
