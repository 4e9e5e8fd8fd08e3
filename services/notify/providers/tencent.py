"""Tencent Cloud SMS (``sms.tencentcloudapi.com``, ``SendSms``, version 2021-01-11), TC3-HMAC-SHA256.

Signing (cloud.tencent.com/document/api/213/30654 "签名方法 v3", and tencentcloud-sdk-python
``tencentcloud/common/sign.py``):

1. ``CanonicalRequest = METHOD\\n/\\n<query>\\n<canonical headers>\\n<signed headers>\\n hex(sha256(body))``
   with headers ``content-type`` and ``host`` lower-cased, ``name:value\\n`` each;
2. ``StringToSign = "TC3-HMAC-SHA256\\n" + timestamp + "\\n" + date/sms/tc3_request + "\\n" +
   hex(sha256(CanonicalRequest))`` where ``date`` is the UTC date of the timestamp;
3. keys ``HMAC("TC3"+SecretKey, date) → HMAC(·, service) → HMAC(·, "tc3_request")``, then
   ``Signature = hex(HMAC(SecretSigning, StringToSign))``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from services.notify.providers.base import ErrorKind, ProviderReceipt, provider_error
from services.notify.providers.http import post

PROVIDER = "tencent"
DEFAULT_BASE_URL = "https://sms.tencentcloudapi.com"
SERVICE = "sms"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"

_PREFIX_KINDS: tuple[tuple[str, ErrorKind], ...] = (
    ("LimitExceeded", ErrorKind.THROTTLED),
    ("RequestLimitExceeded", ErrorKind.THROTTLED),
    ("InternalError", ErrorKind.SERVER),
    ("ResourceUnavailable", ErrorKind.SERVER),
    ("AuthFailure", ErrorKind.SIGNATURE),
    ("InvalidParameterValue.IncorrectPhoneNumber", ErrorKind.INVALID_RECIPIENT),
    ("UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber", ErrorKind.INVALID_RECIPIENT),
    ("FailedOperation.PhoneNumberInBlacklist", ErrorKind.INVALID_RECIPIENT),
    ("FailedOperation.TemplateIncorrectOrUnapproved", ErrorKind.TEMPLATE),
    ("FailedOperation.SignatureIncorrectOrUnapproved", ErrorKind.TEMPLATE),
    ("InvalidParameterValue.TemplateParameterFormatError", ErrorKind.TEMPLATE),
)


def classify(code: str) -> ErrorKind:
    """The kind of a Tencent error code (``LimitExceeded.PhoneNumberDailyLimit`` → throttled)."""
    for prefix, kind in _PREFIX_KINDS:
        if code == prefix or code.startswith(prefix + "."):
            return kind
    return ErrorKind.REJECTED


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_request(host: str, body: bytes, *, action: str | None = None) -> str:
    """POST / with an empty query; signs ``content-type``, ``host`` (and ``x-tc-action`` if given)."""
    headers = [("content-type", CONTENT_TYPE), ("host", host)]
    if action is not None:
        headers.append(("x-tc-action", action.lower()))
    canonical = "".join(f"{k}:{v}\n" for k, v in headers)
    signed = ";".join(k for k, _ in headers)
    return "\n".join(["POST", "/", "", canonical, signed, sha256_hex(body)])


def utc_date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    scope = f"{utc_date(timestamp)}/{service}/tc3_request"
    return "\n".join([ALGORITHM, str(timestamp), scope, sha256_hex(canonical.encode())])


def signing_key(secret_key: str, date: str, service: str) -> bytes:
    """``SecretSigning``: the derived key chain TC3+secret → date → service → tc3_request."""
    secret_date = hmac.new(f"TC3{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    secret_service = hmac.new(secret_date, service.encode(), hashlib.sha256).digest()
    return hmac.new(secret_service, b"tc3_request", hashlib.sha256).digest()


def sign(secret_key: str, timestamp: int, service: str, to_sign: str) -> str:
    key = signing_key(secret_key, utc_date(timestamp), service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(secret_id: str, secret_key: str, timestamp: int, host: str, body: bytes) -> str:
    """The ``Authorization`` header of a ``SendSms`` POST."""
    canonical = canonical_request(host, body)
    signature = sign(secret_key, timestamp, SERVICE, string_to_sign(timestamp, SERVICE, canonical))
    scope = f"{utc_date(timestamp)}/{SERVICE}/tc3_request"
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"
    )


class TencentSmsSender:
    """:class:`SmsSender` over Tencent Cloud SMS. Template parameters are positional: the
    values of ``params`` in insertion order fill ``{1}``, ``{2}``…"""

    provider = PROVIDER

    def __init__(
        self,
        client: httpx.AsyncClient,
        secret_id: str,
        secret_key: str,
        sdk_app_id: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        region: str = "ap-guangzhou",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._id = secret_id
        self._key = secret_key
        self._app = sdk_app_id
        self._url = base_url.rstrip("/") + "/"
        self._host = urlsplit(self._url).netloc
        self._region = region
        self._clock = clock

    async def send(
        self, phone: str, template_code: str, params: Mapping[str, str], sign_name: str
    ) -> ProviderReceipt:
        payload = {
            "PhoneNumberSet": [phone],
            "SmsSdkAppId": self._app,
            "SignName": sign_name,
            "TemplateId": template_code,
            "TemplateParamSet": list(params.values()),
        }
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(self._clock())
        headers = {
            "Authorization": authorization(self._id, self._key, timestamp, self._host, body),
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": "2021-01-11",
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self._region,
        }
        response = await post(PROVIDER, self._client, self._url, content=body, headers=headers)
        try:
            answer = response.json().get("Response", {})
        except ValueError:
            answer = {}
        request_id = str(answer.get("RequestId", ""))
        error = answer.get("Error")
        if error:
            code = str(error.get("Code", ""))
            raise provider_error(PROVIDER, classify(code), code, str(error.get("Message", "")))
        statuses = answer.get("SendStatusSet") or []
        if not statuses:
            kind = ErrorKind.SERVER if response.status_code >= 500 else ErrorKind.REJECTED
            raise provider_error(PROVIDER, kind, f"http_{response.status_code}", "no SendStatusSet")
        status = statuses[0]
        code = str(status.get("Code", ""))
        if code != "Ok":
            raise provider_error(PROVIDER, classify(code), code, str(status.get("Message", "")))
        return ProviderReceipt(PROVIDER, str(status.get("SerialNo", "")), request_id)
