"""The contract of :mod:`contract` run against every adapter."""

from __future__ import annotations

import httpx
import pytest

from services.notify.providers import (
    AliyunSmsSender,
    ErrorKind,
    InMemorySmsSender,
    InMemoryWeChatSender,
    TencentSmsSender,
    WeChatTemplateSender,
)
from services.notify.testing.provider_server import ProviderServer
from tests.services.notify.contract import Harness, SmsContract, WeChatContract

UNAPPROVED = frozenset({"SMS_UNAPPROVED", "TPL_UNAPPROVED"})
MEMORY_FAULTS = {"throttle": ErrorKind.THROTTLED, "server_error": ErrorKind.SERVER}


def server_harness(sender, server: ProviderServer, provider: str) -> Harness:
    def received():
        return [
            (r.to, r.template, tuple(r.params.values()))
            for r in server.state.received
            if r.provider == provider
        ]

    return Harness(sender, received, lambda fault, n: server.state.fail_next(fault, n))  # type: ignore[arg-type]


def memory_harness(sender) -> Harness:
    def received():
        return [(s.to, s.template, tuple(s.params.values())) for s in sender.sent]

    return Harness(sender, received, lambda fault, n: sender.faults.fail_next(MEMORY_FAULTS[fault], n))


class TestAliyun(SmsContract):
    @pytest.fixture
    def harness(self, providers: ProviderServer, http: httpx.AsyncClient) -> Harness:
        sender = AliyunSmsSender(http, "ak-test", "sk-test", base_url=providers.url("aliyun"))
        return server_harness(sender, providers, "aliyun")


class TestTencent(SmsContract):
    @pytest.fixture
    def harness(self, providers: ProviderServer, http: httpx.AsyncClient) -> Harness:
        sender = TencentSmsSender(
            http, "AKIDtest", "tc-secret", "1400006666", base_url=providers.url("tencent")
        )
        return server_harness(sender, providers, "tencent")


class TestInMemorySms(SmsContract):
    @pytest.fixture
    def harness(self) -> Harness:
        return memory_harness(InMemorySmsSender(UNAPPROVED))


class TestWeChat(WeChatContract):
    @pytest.fixture
    def harness(self, providers: ProviderServer, http: httpx.AsyncClient) -> Harness:
        sender = WeChatTemplateSender(http, "wx-app", "wx-secret", base_url=providers.url("wechat"))
        return server_harness(sender, providers, "wechat")


class TestInMemoryWeChat(WeChatContract):
    @pytest.fixture
    def harness(self) -> Harness:
        return memory_harness(InMemoryWeChatSender(UNAPPROVED, unsubscribed=frozenset({"x-not-an-openid"})))
