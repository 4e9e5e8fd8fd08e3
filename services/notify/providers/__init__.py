"""Provider ports (SMS, WeChat) with real httpx adapters and in-memory ones."""

from services.notify.providers.aliyun import AliyunSmsSender
from services.notify.providers.base import (
    ErrorKind,
    PermanentProviderError,
    ProviderError,
    ProviderReceipt,
    RetryableProviderError,
    SmsSender,
    WeChatSender,
)
from services.notify.providers.memory import InMemorySmsSender, InMemoryWeChatSender
from services.notify.providers.tencent import TencentSmsSender
from services.notify.providers.wechat import WeChatTemplateSender

__all__ = [
    "AliyunSmsSender",
    "ErrorKind",
    "InMemorySmsSender",
    "InMemoryWeChatSender",
    "PermanentProviderError",
    "ProviderError",
    "ProviderReceipt",
    "RetryableProviderError",
    "SmsSender",
    "TencentSmsSender",
    "WeChatSender",
    "WeChatTemplateSender",
]
