"""Signature verification as the providers do it, written apart from the client code on purpose:
a shared bug in one implementation would otherwise verify itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime


def _enc(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in "-_.~"):
            out.append(char)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def aliyun_expected(method: str, params: dict[str, str], secret: str) -> str:
    """What ``Signature`` must be for an RPC v1 request carrying ``params``."""
    encoded = sorted((_enc(k), _enc(v)) for k, v in params.items() if k != "Signature")
    query = "&".join(f"{k}={v}" for k, v in encoded)
    to_sign = "&".join([method.upper(), _enc("/"), _enc(query)])
    mac = hmac.new((secret + "&").encode("utf-8"), to_sign.encode("utf-8"), "sha1")
    return base64.b64encode(mac.digest()).decode("ascii")


_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/]+)/tc3_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$"
)


def tc3_check(
    authorization: str, headers: dict[str, str], body: bytes, secrets: dict[str, str], now: int
) -> str | None:
    """None if the TC3 request is genuine, else the Tencent error code to answer with.

    ``headers`` are lower-cased names → values as received.
    """
    match = _AUTH.match(authorization)
    if match is None:
        return "AuthFailure.InvalidAuthorization"
    secret = secrets.get(match["id"])
    if secret is None:
        return "AuthFailure.SecretIdNotFound"
    try:
        timestamp = int(headers.get("x-tc-timestamp", ""))
    except ValueError:
        return "AuthFailure.InvalidAuthorization"
    if abs(now - timestamp) > 300:
        return "AuthFailure.SignatureExpire"
    date = datetime.fromtimestamp(timestamp, tz=UTC).date().isoformat()
    if date != match["date"]:
        return "AuthFailure.SignatureFailure"
    names = match["signed"].split(";")
    canonical_headers = "".join(
        f"{name}:{headers.get(name, '').strip().lower() if name == 'x-tc-action' else headers.get(name, '').strip()}\n"
        for name in names
    )
    canonical = "\n".join(
        ["POST", "/", "", canonical_headers, match["signed"], hashlib.sha256(body).hexdigest()]
    )
    scope = f"{date}/{match['service']}/tc3_request"
    to_sign = "\n".join(
        ["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("TC3" + secret).encode()
    for part in (date, match["service"], "tc3_request"):
        key = hmac.new(key, part.encode(), "sha256").digest()
    expected = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
    return None if hmac.compare_digest(expected, match["sig"]) else "AuthFailure.SignatureFailure"
