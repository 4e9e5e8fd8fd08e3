"""Aliyun SMS (dysmsapi ``SendSms``, API version 2017-05-25), RPC-style signature v1.

Signature (help.aliyun.com "签名机制" / document 56189, and ``aliyunsdkcore`` ``rpc_signature_composer``):

1. percent-encode every key and value as UTF-8 with RFC 3986 unreserved characters
   (``A-Z a-z 0-9 - _ . ~``) kept and everything else as ``%XY`` (so space is ``%20``, ``*`` is
   ``%2A``, never ``+``);
2. sort the pairs by encoded key and join as ``k=v`` with ``&``: the canonicalised query;
3. ``StringToSign = METHOD + "&" + enc("/") + "&" + enc(canonicalised query)``;
4. ``Signature = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from services.notify.providers.base import ErrorKind, ProviderReceipt, provider_error
from services.notify.providers.http import post

PROVIDER = "aliyun"
DEFAULT_BASE_URL = "https://dysmsapi.aliyuncs.com"

# Codes of dysmsapi's error-code centre; anything unknown is permanent unless HTTP 5xx.
_KINDS: dict[str, ErrorKind] = {
    "isv.BUSINESS_LIMIT_CONTROL": ErrorKind.THROTTLED,
    "isv.DAY_LIMIT_CONTROL": ErrorKind.THROTTLED,
    "Throttling.User": ErrorKind.THROTTLED,
    "Throttling": ErrorKind.THROTTLED,
    "isp.SYSTEM_ERROR": ErrorKind.SERVER,
    "isp.RAM_PERMISSION_DENY": ErrorKind.SIGNATURE,
    "ServiceUnavailable": ErrorKind.SERVER,
    "SignatureDoesNotMatch": ErrorKind.SIGNATURE,
    "InvalidAccessKeyId.NotFound": ErrorKind.SIGNATURE,
    "IncompleteSignature": ErrorKind.SIGNATURE,
    "SignatureNonceUsed": ErrorKind.SIGNATURE,
    "InvalidTimeStamp.Expired": ErrorKind.SIGNATURE,
    "isv.MOBILE_NUMBER_ILLEGAL": ErrorKind.INVALID_RECIPIENT,
    "isv.MOBILE_COUNT_OVER_LIMIT": ErrorKind.INVALID_RECIPIENT,
    "isv.SMS_TEMPLATE_ILLEGAL": ErrorKind.TEMPLATE,
    "isv.SMS_SIGNATURE_ILLEGAL": ErrorKind.TEMPLATE,
    "isv.TEMPLATE_MISSING_PARAMETERS": ErrorKind.TEMPLATE,
}


def percent_encode(text: str) -> str:
    """RFC 3986 encoding as Aliyun's POP signature wants it."""
    return quote(text, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    """The sorted, encoded ``k=v&…`` string (``Signature`` itself excluded)."""
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in params.items() if k != "Signature")
    return "&".join(f"{k}={v}" for k, v in pairs)


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&enc(canonical query)``."""
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Base64 HMAC-SHA1 of the string to sign, keyed by ``secret + "&"``."""
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def iso_timestamp(now: datetime) -> str:
    """``2017-07-12T02:42:19Z``: ISO 8601 in UTC, second precision."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AliyunSmsSender:
    """:class:`SmsSender` over dysmsapi; POSTs a form body signed as above."""

    provider = PROVIDER

    def __init__(
        self,
        client: httpx.AsyncClient,
        access_key_id: str,
        access_key_secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        region_id: str = "cn-hangzhou",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._client = client
        self._key_id = access_key_id
        self._secret = access_key_secret
        self._url = base_url.rstrip("/") + "/"
        self._region = region_id
        self._clock = clock
        self._nonce = nonce

    def signed_params(
        self, phone: str, template_code: str, params: Mapping[str, str], sign_name: str
    ) -> dict[str, str]:
        """The full parameter set of one ``SendSms`` call, ``Signature`` included."""
        query = {
            "AccessKeyId": self._key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "PhoneNumbers": phone,
            "RegionId": self._region,
            "SignName": sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self._nonce(),
            "SignatureVersion": "1.0",
            "TemplateCode": template_code,
            "TemplateParam": json.dumps(dict(params), ensure_ascii=False, separators=(",", ":")),
            "Timestamp": iso_timestamp(self._clock()),
            "Version": "2017-05-25",
        }
        query["Signature"] = signature("POST", query, self._secret)
        return query

    async def send(
        self, phone: str, template_code: str, params: Mapping[str, str], sign_name: str
    ) -> ProviderReceipt:
        form = self.signed_params(phone, template_code, params, sign_name)
        response = await post(PROVIDER, self._client, self._url, data=form)
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = str(body.get("Code", ""))
        if response.status_code < 300 and code == "OK":
            return ProviderReceipt(PROVIDER, str(body.get("BizId", "")), str(body.get("RequestId", "")))
        default = ErrorKind.SERVER if response.status_code >= 500 else ErrorKind.REJECTED
        raise provider_error(PROVIDER, _KINDS.get(code, default), code, str(body.get("Message", "")))
