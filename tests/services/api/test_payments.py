"""Payment notifications verified end to end: real RSA signatures, real AES-256-GCM.

The provider side is :mod:`services.api.payments.testing`, which signs and encrypts exactly as
WeChat Pay and Alipay document it; every tampering below must be caught by the verifier.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.payments import (
    AlipayNotifier,
    PaymentNoticeError,
    PaymentSignatureError,
    WechatPayNotifier,
    alipay,
    wechatpay,
    yuan_to_fen,
)
from services.api.payments.base import load_public_key
from services.api.payments.testing import (
    FakeAlipay,
    FakeWechatPay,
    generate_rsa_key,
    rsa_sign,
    self_signed_certificate,
)
from services.api.payments.wechatpay import signed_message

NOW = datetime(2026, 11, 21, 2, 35, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def wechat() -> FakeWechatPay:
    return FakeWechatPay()


@pytest.fixture(scope="module")
def other_key() -> Any:
    return generate_rsa_key()


@pytest.fixture(scope="module")
def ali() -> FakeAlipay:
    return FakeAlipay()


def notifier(wechat: FakeWechatPay, now: datetime = NOW, **kwargs: Any) -> WechatPayNotifier:
    kwargs.setdefault("mchid", wechat.mchid)
    kwargs.setdefault("appid", wechat.appid)
    return WechatPayNotifier(
        wechat.api_v3_key, {wechat.serial: wechat.public_key}, clock=lambda: now, **kwargs
    )


# --- WeChat Pay -------------------------------------------------------------------------------


def test_wechat_valid_notification_parses(wechat: FakeWechatPay) -> None:
    txn = wechat.transaction("MF20261121000001", 10010, attach="account=A-101")
    headers, body = wechat.notification(txn, now=NOW)
    notice = notifier(wechat).parse(headers, body)
    assert notice.provider == "wechat"
    assert notice.order_no == "MF20261121000001"
    assert notice.provider_txn_id == txn["transaction_id"]
    assert notice.amount_fen == 10010 and notice.currency == "CNY"
    assert notice.paid_at == datetime(2026, 11, 21, 2, 34, 56, tzinfo=UTC)
    assert notice.paid_at.utcoffset() == timedelta(hours=8)
    assert notice.attach == "account=A-101"
    assert notice.raw == txn


def test_wechat_headers_are_case_insensitive_and_certificate_keys_work(wechat: FakeWechatPay) -> None:
    certificate = self_signed_certificate(wechat.private_key, serial=int(wechat.serial[:16], 16))
    keys = {wechat.serial: load_public_key(certificate)}
    headers, body = wechat.notification(wechat.transaction("MF1", 1), now=NOW)
    lowered = {k.lower(): v for k, v in headers.items()}
    notice = WechatPayNotifier(wechat.api_v3_key, keys, clock=lambda: NOW).parse(lowered, body)
    assert notice.amount_fen == 1 and notice.attach is None


def _tamper_header(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    return {**headers, name: value}


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, b: (h, b.replace("支付成功".encode(), "支付失败".encode())), id="body"),
        pytest.param(lambda h, b: (h, b + b" "), id="body-whitespace"),
        pytest.param(lambda h, b: (_tamper_header(h, "Wechatpay-Nonce", "x" * 32), b), id="nonce"),
        pytest.param(
            lambda h, b: (
                _tamper_header(h, "Wechatpay-Timestamp", str(int(h["Wechatpay-Timestamp"]) + 1)),
                b,
            ),
            id="timestamp",
        ),
        pytest.param(
            lambda h, b: (_tamper_header(h, "Wechatpay-Serial", "5157F09EFDC096DE15EBE81A47057A72"), b),
            id="serial",
        ),
        pytest.param(
            lambda h, b: (_tamper_header(h, "Wechatpay-Signature", "WECHATPAY/SIGNTEST/abc"), b), id="probe"
        ),
        pytest.param(lambda h, b: (_tamper_header(h, "Wechatpay-Signature", "not base64!"), b), id="garbage"),
        pytest.param(
            lambda h, b: ({k: v for k, v in h.items() if k != "Wechatpay-Signature"}, b), id="missing"
        ),
    ],
)
def test_wechat_tampering_is_a_signature_error(wechat: FakeWechatPay, tamper: Any) -> None:
    headers, body = wechat.notification(wechat.transaction("MF1", 100), now=NOW)
    notifier(wechat).parse(headers, body)  # the untouched notification is fine
    bad_headers, bad_body = tamper(dict(headers), body)
    with pytest.raises(PaymentSignatureError):
        notifier(wechat).parse(bad_headers, bad_body)


def test_wechat_signature_by_another_key_under_our_serial(wechat: FakeWechatPay, other_key: Any) -> None:
    headers, body = wechat.notification(wechat.transaction("MF1", 100), now=NOW)
    forged = rsa_sign(
        other_key, signed_message(headers["Wechatpay-Timestamp"], headers["Wechatpay-Nonce"], body)
    )
    with pytest.raises(PaymentSignatureError, match="does not verify"):
        notifier(wechat).parse({**headers, "Wechatpay-Signature": forged}, body)


@pytest.mark.parametrize(
    ("skew", "ok"), [(299, True), (-299, True), (301, False), (-301, False), (3600, False)]
)
def test_wechat_timestamp_window(wechat: FakeWechatPay, skew: int, ok: bool) -> None:
    headers, body = wechat.notification(wechat.transaction("MF1", 100), now=NOW)
    verifier = notifier(wechat, now=NOW + timedelta(seconds=skew))
    if ok:
        assert verifier.parse(headers, body).amount_fen == 100
    else:
        with pytest.raises(PaymentSignatureError, match="outside"):
            verifier.parse(headers, body)


def test_wechat_window_is_configurable(wechat: FakeWechatPay) -> None:
    headers, body = wechat.notification(wechat.transaction("MF1", 100), now=NOW)
    assert notifier(wechat, now=NOW + timedelta(minutes=9), tolerance=timedelta(minutes=10)).parse(
        headers, body
    )
    with pytest.raises(PaymentSignatureError):
        notifier(wechat, now=NOW + timedelta(seconds=61), tolerance=timedelta(minutes=1)).parse(headers, body)


def test_wechat_wrong_api_v3_key_fails_authentication(wechat: FakeWechatPay) -> None:
    headers, body = wechat.notification(wechat.transaction("MF1", 100), now=NOW)
    wrong = WechatPayNotifier("0" * 32, {wechat.serial: wechat.public_key}, clock=lambda: NOW)
    with pytest.raises(PaymentSignatureError, match="AES-GCM"):
        wrong.parse(headers, body)


def test_wechat_tampered_ciphertext_and_associated_data(wechat: FakeWechatPay) -> None:
    """Even correctly signed (say, by a buggy proxy re-signing), a changed resource is rejected."""
    envelope = json.loads(wechat.notification(wechat.transaction("MF1", 100), now=NOW)[1])
    sealed = bytearray(base64.b64decode(envelope["resource"]["ciphertext"]))
    sealed[5] ^= 0x01
    for resource in (
        {**envelope["resource"], "ciphertext": base64.b64encode(bytes(sealed)).decode()},
        {**envelope["resource"], "associated_data": "certificate"},
    ):
        body = json.dumps({**envelope, "resource": resource}).encode()
        with pytest.raises(PaymentSignatureError, match="AES-GCM"):
            notifier(wechat).parse(wechat.sign(body, now=NOW), body)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trade_state": "NOTPAY"}, "trade_state"),
        ({"trade_state": "REFUND"}, "trade_state"),
        ({"mchid": "1900000999"}, "mchid"),
        ({"appid": "wx0000000000000000"}, "appid"),
        ({"amount": {"total": 100, "currency": "USD"}}, "currency"),
        ({"amount": {"total": 1.0, "currency": "CNY"}}, "amount.total"),
        ({"amount": {"total": 0, "currency": "CNY"}}, "amount.total"),
        ({"out_trade_no": ""}, "out_trade_no"),
        ({"success_time": "2026-11-21 10:34:56"}, "UTC offset"),
        ({"success_time": "yesterday"}, "RFC 3339"),
    ],
)
def test_wechat_authentic_but_unusable_notices(
    wechat: FakeWechatPay, change: dict[str, Any], message: str
) -> None:
    txn = {**wechat.transaction("MF1", 100), **change}
    headers, body = wechat.notification(txn, now=NOW)
    with pytest.raises(PaymentNoticeError, match=message):
        notifier(wechat).parse(headers, body)


def test_wechat_other_event_types_are_not_payments(wechat: FakeWechatPay) -> None:
    headers, body = wechat.notification(wechat.transaction("MF1", 100), now=NOW, event_type="REFUND.SUCCESS")
    with pytest.raises(PaymentNoticeError, match="event_type"):
        notifier(wechat).parse(headers, body)


def test_wechat_acknowledgements() -> None:
    ok = wechatpay.ack_success()
    assert ok.status_code == 200 and json.loads(ok.body)["code"] == "SUCCESS"
    fail = wechatpay.ack_failure("签名错误", 401)
    assert fail.status_code == 401 and json.loads(fail.body) == {"code": "FAIL", "message": "签名错误"}
    with pytest.raises(ValueError, match="4XX or 5XX"):
        wechatpay.ack_failure(status_code=200)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=10**11))
def test_wechat_amounts_round_trip(wechat: FakeWechatPay, total: int) -> None:
    headers, body = wechat.notification(wechat.transaction("MF1", total), now=NOW)
    assert notifier(wechat).parse(headers, body).amount_fen == total


# --- Alipay -----------------------------------------------------------------------------------


def ali_notifier(ali: FakeAlipay, **kwargs: Any) -> AlipayNotifier:
    return AlipayNotifier(ali.app_id, ali.public_key, **kwargs)


@pytest.mark.parametrize(
    ("amount", "fen"),
    [("0.01", 1), ("100.10", 10010), ("100.1", 10010), ("5", 500), ("12345678.99", 1234567899)],
)
def test_alipay_valid_notification_parses(ali: FakeAlipay, amount: str, fen: int) -> None:
    paid = datetime(2026, 11, 21, 2, 34, 56, tzinfo=UTC)
    params = ali.notification(
        "MF20261121000002", amount, gmt_payment=paid, passback="account=A-101&房间=3#101"
    )
    notice = ali_notifier(ali, seller_id=ali.seller_id).parse(params)
    assert notice.provider == "alipay" and notice.order_no == "MF20261121000002"
    assert notice.provider_txn_id == params["trade_no"]
    assert notice.amount_fen == fen and notice.currency == "CNY"
    assert notice.paid_at == paid and notice.paid_at.utcoffset() == timedelta(hours=8)
    assert notice.attach == "account=A-101&房间=3#101"
    assert notice.raw == params


@pytest.mark.parametrize("charset", ["utf-8", "GBK"])
def test_alipay_form_body_in_its_charset(ali: FakeAlipay, charset: str) -> None:
    params = ali.notification("MF3", "88.88", charset=charset, passback="宿舍")
    body = ali.form_body(params)
    assert body.isascii()
    notice = ali_notifier(ali).parse_body(body)
    assert notice.amount_fen == 8888 and notice.attach == "宿舍" and notice.raw["subject"] == "电费充值"


def test_alipay_trade_finished_is_a_payment_too(ali: FakeAlipay) -> None:
    params = ali.notification("MF4", "1.00", trade_status="TRADE_FINISHED")
    assert ali_notifier(ali).parse(params).amount_fen == 100


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p: {**p, "total_amount": "1000.00"}, id="amount"),
        pytest.param(lambda p: {**p, "out_trade_no": "MF-other"}, id="order"),
        pytest.param(lambda p: {**p, "refund_fee": "0.01"}, id="added-param"),
        pytest.param(lambda p: {k: v for k, v in p.items() if k != "buyer_id"}, id="removed-param"),
        pytest.param(lambda p: {k: v for k, v in p.items() if k != "sign"}, id="no-sign"),
        pytest.param(lambda p: {**p, "sign_type": "RSA"}, id="rsa1"),
        pytest.param(lambda p: {**p, "sign": p["sign"][:-4] + "AAA="}, id="sign-bits"),
        pytest.param(lambda p: {**p, "sign": "%%%"}, id="sign-garbage"),
    ],
)
def test_alipay_tampering_is_a_signature_error(ali: FakeAlipay, tamper: Any) -> None:
    params = ali.notification("MF5", "20.00")
    ali_notifier(ali).parse(params)
    with pytest.raises(PaymentSignatureError):
        ali_notifier(ali).parse(tamper(dict(params)))


def test_alipay_signature_by_another_key(ali: FakeAlipay, other_key: Any) -> None:
    forger = FakeAlipay(app_id=ali.app_id, private_key=other_key)
    with pytest.raises(PaymentSignatureError):
        ali_notifier(ali).parse(forger.notification("MF6", "20.00"))


def test_alipay_empty_values_are_not_signed(ali: FakeAlipay) -> None:
    params = ali.notification("MF7", "20.00")
    assert ali_notifier(ali).parse({**params, "body": ""}).amount_fen == 2000
    assert alipay.signing_string({"b": "2", "a": "1", "c": "", "sign": "x", "sign_type": "RSA2"}) == "a=1&b=2"


def test_alipay_foreign_app_and_seller(ali: FakeAlipay) -> None:
    foreign = FakeAlipay(app_id="2021000000000001", private_key=ali.private_key)
    with pytest.raises(PaymentNoticeError, match="app_id"):
        ali_notifier(ali).parse(foreign.notification("MF8", "1.00"))
    with pytest.raises(PaymentNoticeError, match="seller_id"):
        ali_notifier(ali, seller_id="2088000000000000").parse(ali.notification("MF8", "1.00"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trade_status": "WAIT_BUYER_PAY"}, "not a payment"),
        ({"trade_status": "TRADE_CLOSED"}, "not a payment"),
        ({"extra": {"trans_currency": "USD"}}, "currency"),
        ({"extra": {"gmt_payment": "2026/11/21 10:00"}}, "gmt_payment"),
    ],
)
def test_alipay_authentic_but_unusable_notices(ali: FakeAlipay, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PaymentNoticeError, match=message):
        ali_notifier(ali).parse(ali.notification("MF9", "1.00", **kwargs))


@pytest.mark.parametrize(
    "amount", ["0.00", "1.234", "-1.00", "1e3", " 1.00", "01.00", "", "1.", ".5", "1,00", "１.00"]
)
def test_alipay_malformed_amounts(ali: FakeAlipay, amount: str) -> None:
    with pytest.raises(PaymentNoticeError):
        ali_notifier(ali).parse(ali.notification("MF10", amount))


def test_alipay_repeated_parameter_is_rejected(ali: FakeAlipay) -> None:
    body = ali.form_body(ali.notification("MF11", "1.00")) + b"&total_amount=999.00"
    with pytest.raises(PaymentNoticeError, match="repeats"):
        ali_notifier(ali).parse_body(body)


def test_alipay_acknowledgements() -> None:
    assert alipay.ack_success().body == b"success" and alipay.ack_failure().body == b"failure"


def test_alipay_public_key_formats(ali: FakeAlipay) -> None:
    from cryptography.hazmat.primitives import serialization

    der = ali.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = ali.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    one_line = base64.b64encode(der).decode()  # as the Alipay console shows it
    for text in (pem, one_line):
        assert AlipayNotifier(ali.app_id, load_public_key(text)).parse(ali.notification("MF12", "1.00"))


@given(st.integers(min_value=1, max_value=10**13))
def test_yuan_to_fen_is_exact(fen: int) -> None:
    yuan, cents = divmod(fen, 100)
    assert yuan_to_fen(f"{yuan}.{cents:02d}") == fen
    if cents % 10 == 0:
        assert yuan_to_fen(f"{yuan}.{cents // 10}") == fen


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=10**11))
def test_alipay_amounts_round_trip(ali: FakeAlipay, fen: int) -> None:
    params = ali.notification("MF13", f"{fen // 100}.{fen % 100:02d}")
    assert ali_notifier(ali).parse_body(ali.form_body(params)).amount_fen == fen
