"""Contract tests of both ports, subclassed once per adapter (real over the local provider
server, and in-memory): the same inputs must give the same receipts, records and error classes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from services.notify.providers import ErrorKind, PermanentProviderError, RetryableProviderError


@dataclass
class Harness:
    """An adapter with a way to see what its provider accepted and to make it fail."""

    sender: Any
    received: Callable[[], list[tuple[str, str, tuple[str, ...]]]]
    fail: Callable[[str, int], None]  # "throttle" | "server_error"


PHONE = "+8613800138000"


class SmsContract:
    async def test_accepted_message_is_recorded(self, harness: Harness):
        receipt = await harness.sender.send(
            PHONE, "SMS_1001", {"balance": "12.30", "room": "3-201"}, "校园电费"
        )
        assert receipt.message_id and receipt.provider == harness.sender.provider
        assert harness.received() == [(PHONE, "SMS_1001", ("12.30", "3-201"))]

    async def test_each_send_gets_its_own_id(self, harness: Harness):
        first = await harness.sender.send(PHONE, "SMS_1001", {"a": "1"}, "校园电费")
        second = await harness.sender.send(PHONE, "SMS_1001", {"a": "1"}, "校园电费")
        assert first.message_id != second.message_id
        assert len(harness.received()) == 2

    @pytest.mark.parametrize(
        ("fault", "kind"), [("throttle", ErrorKind.THROTTLED), ("server_error", ErrorKind.SERVER)]
    )
    async def test_transient_faults_are_retryable_and_pass(
        self, harness: Harness, fault: str, kind: ErrorKind
    ):
        harness.fail(fault, 1)
        with pytest.raises(RetryableProviderError) as caught:
            await harness.sender.send(PHONE, "SMS_1001", {"a": "1"}, "校园电费")
        assert caught.value.kind == kind
        assert harness.received() == []
        await harness.sender.send(PHONE, "SMS_1001", {"a": "1"}, "校园电费")
        assert len(harness.received()) == 1

    async def test_invalid_phone_is_permanent(self, harness: Harness):
        with pytest.raises(PermanentProviderError) as caught:
            await harness.sender.send("12345", "SMS_1001", {"a": "1"}, "校园电费")
        assert caught.value.kind == ErrorKind.INVALID_RECIPIENT

    async def test_unapproved_template_is_permanent(self, harness: Harness):
        with pytest.raises(PermanentProviderError) as caught:
            await harness.sender.send(PHONE, "SMS_UNAPPROVED", {"a": "1"}, "校园电费")
        assert caught.value.kind == ErrorKind.TEMPLATE
        assert harness.received() == []


OPENID = "oX4nq5Student0001"


class WeChatContract:
    async def test_accepted_message_is_recorded(self, harness: Harness):
        receipt = await harness.sender.send(OPENID, "TPL_LOW", {"first": "余额不足", "keyword1": "12.30"})
        assert receipt.message_id and receipt.provider == harness.sender.provider
        assert harness.received() == [(OPENID, "TPL_LOW", ("余额不足", "12.30"))]

    @pytest.mark.parametrize(
        ("fault", "kind"), [("throttle", ErrorKind.THROTTLED), ("server_error", ErrorKind.SERVER)]
    )
    async def test_transient_faults_are_retryable_and_pass(
        self, harness: Harness, fault: str, kind: ErrorKind
    ):
        await harness.sender.send(OPENID, "TPL_LOW", {"k": "v"})  # warm any token cache
        harness.fail(fault, 1)
        with pytest.raises(RetryableProviderError) as caught:
            await harness.sender.send(OPENID, "TPL_LOW", {"k": "v"})
        assert caught.value.kind == kind
        await harness.sender.send(OPENID, "TPL_LOW", {"k": "v"})
        assert len(harness.received()) == 2

    async def test_unknown_openid_is_permanent(self, harness: Harness):
        with pytest.raises(PermanentProviderError) as caught:
            await harness.sender.send("x-not-an-openid", "TPL_LOW", {"k": "v"})
        assert caught.value.kind == ErrorKind.INVALID_RECIPIENT

    async def test_unapproved_template_is_permanent(self, harness: Harness):
        with pytest.raises(PermanentProviderError) as caught:
            await harness.sender.send(OPENID, "TPL_UNAPPROVED", {"k": "v"})
        assert caught.value.kind == ErrorKind.TEMPLATE
