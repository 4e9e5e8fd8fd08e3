"""What only the httpx adapters can show: signatures checked by the server, timeouts, tokens."""

from __future__ import annotations

import httpx
import pytest

from services.notify.providers import (
    AliyunSmsSender,
    ErrorKind,
    PermanentProviderError,
    RetryableProviderError,
    TencentSmsSender,
    WeChatTemplateSender,
)
from services.notify.testing.provider_server import ProviderServer

PHONE = "+8613800138000"


def aliyun(http, server, secret="sk-test") -> AliyunSmsSender:
    return AliyunSmsSender(http, "ak-test", secret, base_url=server.url("aliyun"))


def tencent(http, server, secret="tc-secret") -> TencentSmsSender:
    return TencentSmsSender(http, "AKIDtest", secret, "1400006666", base_url=server.url("tencent"))


@pytest.mark.parametrize("make", [aliyun, tencent])
async def test_wrong_secret_is_a_permanent_signature_error(providers, http, make):
    with pytest.raises(PermanentProviderError) as caught:
        await make(http, providers, secret="not-the-secret").send(PHONE, "SMS_1", {"a": "1"}, "电费")
    assert caught.value.kind == ErrorKind.SIGNATURE
    assert providers.state.received == []


@pytest.mark.parametrize("make", [aliyun, tencent])
async def test_injected_signature_rejection_is_permanent(providers, http, make):
    providers.state.fail_next("bad_signature")
    with pytest.raises(PermanentProviderError) as caught:
        await make(http, providers).send(PHONE, "SMS_1", {"a": "1"}, "电费")
    assert caught.value.kind == ErrorKind.SIGNATURE


@pytest.mark.parametrize("make", [aliyun, tencent])
async def test_delay_beyond_client_timeout_is_retryable(providers, http, make):
    providers.state.fail_next("delay")
    with pytest.raises(RetryableProviderError) as caught:
        await make(http, providers).send(PHONE, "SMS_1", {"a": "1"}, "电费")
    assert caught.value.kind == ErrorKind.TIMEOUT


async def test_unreachable_provider_is_a_retryable_network_error(http):
    sender = AliyunSmsSender(http, "ak-test", "sk-test", base_url="http://127.0.0.1:9")
    with pytest.raises(RetryableProviderError) as caught:
        await sender.send(PHONE, "SMS_1", {"a": "1"}, "电费")
    assert caught.value.kind == ErrorKind.NETWORK


async def test_server_rejects_a_tampered_aliyun_request(providers, http):
    form = aliyun(http, providers).signed_params(PHONE, "SMS_1", {"amount": "10.00"}, "电费")
    form["TemplateParam"] = '{"amount":"99999.00"}'
    answer = await http.post(providers.url("aliyun") + "/", data=form)
    assert answer.status_code == 400 and answer.json()["Code"] == "SignatureDoesNotMatch"
    assert providers.state.received == []


async def test_server_rejects_a_tampered_tencent_request(providers):
    captured: list[httpx.Request] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200, json={"Response": {"SendStatusSet": [{"Code": "Ok", "SerialNo": "1"}]}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(capture)) as fake:
        await tencent(fake, providers).send(PHONE, "SMS_1", {"amount": "10.00"}, "电费")
    original = captured[0]
    tampered_body = original.content.replace(b"10.00", b"99.00")
    async with httpx.AsyncClient() as real:
        genuine = await real.post(str(original.url), content=original.content, headers=original.headers)
        tampered = await real.post(str(original.url), content=tampered_body, headers=original.headers)
    assert genuine.json()["Response"]["SendStatusSet"][0]["Code"] == "Ok"
    assert tampered.json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert len(providers.state.received) == 1


async def test_aliyun_replayed_nonce_is_refused(providers, http):
    sender = AliyunSmsSender(
        http, "ak-test", "sk-test", base_url=providers.url("aliyun"), nonce=lambda: "same"
    )
    await sender.send(PHONE, "SMS_1", {"a": "1"}, "电费")
    with pytest.raises(PermanentProviderError):
        await sender.send(PHONE, "SMS_1", {"a": "1"}, "电费")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wechat(http, server: ProviderServer, clock=None, secret="wx-secret") -> WeChatTemplateSender:
    kw = {"clock": clock} if clock else {}
    return WeChatTemplateSender(http, "wx-app", secret, base_url=server.url("wechat"), **kw)


async def test_wechat_token_is_cached(providers, http):
    sender = wechat(http, providers)
    for _ in range(3):
        await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    assert sender.token_fetches == 1 and len(providers.state.received) == 3


async def test_wechat_token_refreshed_shortly_before_expiry(providers, http):
    providers.state.token_ttl = 7200
    clock = FakeClock()
    sender = wechat(http, providers, clock)
    await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    clock.now += 7200 - 300 - 1
    await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    assert sender.token_fetches == 1
    clock.now += 2  # inside the refresh margin
    await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    assert sender.token_fetches == 2


async def test_wechat_token_expired_by_server_is_refreshed_with_one_retry(providers, http):
    sender = wechat(http, providers)
    await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    providers.state.expire_wechat_tokens()
    await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    assert sender.token_fetches == 2 and len(providers.state.received) == 2


async def test_wechat_token_invalid_twice_gives_up(providers, http):
    sender = wechat(http, providers)
    await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    # 40001 on the send, then the fresh-token fetch is refused too (40125): no loop, permanent
    providers.state.fail_next("bad_signature", 2)
    with pytest.raises(PermanentProviderError) as caught:
        await sender.send("oStudent", "TPL_LOW", {"k": "v"})
    assert caught.value.code == "40125" and sender.token_fetches == 1
    assert providers.state.requests == 4


async def test_wechat_wrong_app_secret_is_permanent(providers, http):
    with pytest.raises(PermanentProviderError) as caught:
        await wechat(http, providers, secret="wrong").send("oStudent", "TPL_LOW", {"k": "v"})
    assert caught.value.kind == ErrorKind.SIGNATURE and caught.value.code == "40125"


async def test_control_endpoints(providers, http):
    await http.post(providers.base_url + "/_control/faults", params={"kind": "throttle", "count": 1})
    with pytest.raises(RetryableProviderError):
        await aliyun(http, providers).send(PHONE, "SMS_1", {"a": "1"}, "电费")
    await aliyun(http, providers).send(PHONE, "SMS_1", {"a": "1"}, "电费")
    received = (await http.get(providers.base_url + "/_control/received")).json()
    assert [r["to"] for r in received] == [PHONE]
