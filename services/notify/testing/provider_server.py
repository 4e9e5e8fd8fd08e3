"""A local stand-in for Aliyun SMS, Tencent Cloud SMS and the WeChat official-account API.

It verifies signatures (see :mod:`provider_checks`, written apart from the clients), records
what it accepted, and fails on demand: :meth:`ProviderState.fail_next` queues ``throttle``,
``server_error`` (HTTP 503), ``delay`` (sleep before answering), ``bad_signature`` faults, each
consumed by one provider request; :meth:`ProviderState.expire_wechat_tokens` makes every issued
access_token answer 42001. The same controls are under ``/_control`` for the dev stack.

    with ProviderServer() as server:
        AliyunSmsSender(client, "ak", "sk", base_url=server.url("aliyun"))
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from services.notify.testing.provider_checks import aliyun_expected, tc3_check

FaultKind = Literal["throttle", "server_error", "delay", "bad_signature"]
PHONE = re.compile(r"^(\+?86)?1[3-9]\d{9}$|^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class Received:
    """One message a provider accepted; Tencent's positional params are keyed "1", "2"…"""

    provider: str
    to: str
    template: str
    params: dict[str, str]
    sign_name: str = ""
    url: str | None = None


@dataclass
class ProviderState:
    aliyun_keys: dict[str, str] = field(default_factory=lambda: {"ak-test": "sk-test"})
    tencent_keys: dict[str, str] = field(default_factory=lambda: {"AKIDtest": "tc-secret"})
    wechat_apps: dict[str, str] = field(default_factory=lambda: {"wx-app": "wx-secret"})
    unapproved_templates: set[str] = field(default_factory=lambda: {"SMS_UNAPPROVED", "TPL_UNAPPROVED"})
    token_ttl: int = 7200
    delay_seconds: float = 2.0
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    faults: deque[FaultKind] = field(default_factory=deque)
    tokens: dict[str, float] = field(default_factory=dict)
    nonces: set[str] = field(default_factory=set)
    epoch: int = 0  # bumped by reset: a request delayed across a reset is answered but not recorded

    def fail_next(self, kind: FaultKind, count: int = 1) -> None:
        self.faults.extend([kind] * count)

    def expire_wechat_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = 0.0

    def reset(self) -> None:
        self.received.clear()
        self.faults.clear()
        self.tokens.clear()
        self.requests = 0
        self.epoch += 1

    def record(self, received: Received, epoch: int) -> None:
        if epoch == self.epoch:
            self.received.append(received)


def _fault(state: ProviderState) -> FaultKind | None:
    state.requests += 1
    return state.faults.popleft() if state.faults else None


async def _delay(state: ProviderState, fault: FaultKind | None) -> int:
    """Sleep if the fault says so; the epoch the request started in."""
    epoch = state.epoch
    if fault == "delay":
        await asyncio.sleep(state.delay_seconds)
    return epoch


def build_app(state: ProviderState) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    def aliyun_error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"RequestId": secrets.token_hex(8), "Code": code, "Message": message}, status)

    @app.post("/aliyun/")
    async def aliyun(request: Request) -> Response:
        fault = _fault(state)
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        epoch = await _delay(state, fault)
        if fault == "server_error":
            return PlainTextResponse("upstream unavailable", 503)
        secret = state.aliyun_keys.get(params.get("AccessKeyId", ""))
        if secret is None:
            return aliyun_error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if fault == "bad_signature" or params.get("Signature") != aliyun_expected("POST", params, secret):
            return aliyun_error(400, "SignatureDoesNotMatch", "Specified signature is not matched.")
        if params.get("SignatureNonce", "") in state.nonces:
            return aliyun_error(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        state.nonces.add(params.get("SignatureNonce", ""))
        if fault == "throttle":
            return aliyun_error(200, "isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
        if not PHONE.match(params.get("PhoneNumbers", "")):
            return aliyun_error(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if params.get("TemplateCode") in state.unapproved_templates:
            return aliyun_error(200, "isv.SMS_TEMPLATE_ILLEGAL", "模板不合法")
        values = json.loads(params.get("TemplateParam", "{}"))
        state.record(
            Received("aliyun", params["PhoneNumbers"], params["TemplateCode"], values, params["SignName"]),
            epoch,
        )
        biz = f"{len(state.received)}^0"
        return JSONResponse({"Message": "OK", "RequestId": secrets.token_hex(8), "BizId": biz, "Code": "OK"})

    def tencent_answer(body: dict[str, Any]) -> JSONResponse:
        return JSONResponse({"Response": {**body, "RequestId": secrets.token_hex(8)}})

    @app.post("/tencent/")
    async def tencent(request: Request) -> Response:
        fault = _fault(state)
        body = await request.body()
        epoch = await _delay(state, fault)
        if fault == "server_error":
            return PlainTextResponse("upstream unavailable", 503)
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = tc3_check(
            headers.get("authorization", ""), headers, body, state.tencent_keys, int(time.time())
        )
        if fault == "bad_signature":
            problem = "AuthFailure.SignatureFailure"
        if problem:
            return tencent_answer({"Error": {"Code": problem, "Message": "signature check failed"}})
        if fault == "throttle":
            return tencent_answer({"Error": {"Code": "RequestLimitExceeded", "Message": "too many requests"}})
        payload = json.loads(body)
        phone, template = payload["PhoneNumberSet"][0], payload["TemplateId"]
        status = {"SerialNo": "", "PhoneNumber": phone, "Code": "Ok", "Message": "send success"}
        if not PHONE.match(phone):
            status |= {"Code": "InvalidParameterValue.IncorrectPhoneNumber", "Message": "bad phone"}
        elif template in state.unapproved_templates:
            status |= {"Code": "FailedOperation.TemplateIncorrectOrUnapproved", "Message": "not approved"}
        else:
            values = {str(i): v for i, v in enumerate(payload.get("TemplateParamSet", []), start=1)}
            state.record(Received("tencent", phone, template, values, payload["SignName"]), epoch)
            status["SerialNo"] = f"2028:{len(state.received)}"
        return tencent_answer({"SendStatusSet": [status]})

    @app.get("/wechat/cgi-bin/token")
    async def token(grant_type: str = "", appid: str = "", secret: str = "") -> Response:
        fault = _fault(state)
        await _delay(state, fault)
        if fault == "server_error":
            return PlainTextResponse("upstream unavailable", 503)
        if fault == "throttle":
            return JSONResponse({"errcode": 45009, "errmsg": "reach max api daily quota limit"})
        if appid not in state.wechat_apps:
            return JSONResponse({"errcode": 40013, "errmsg": "invalid appid"})
        if (
            fault == "bad_signature"
            or state.wechat_apps[appid] != secret
            or grant_type != "client_credential"
        ):
            return JSONResponse({"errcode": 40125, "errmsg": "invalid appsecret"})
        value = secrets.token_urlsafe(24)
        state.tokens[value] = time.monotonic() + state.token_ttl
        return JSONResponse({"access_token": value, "expires_in": state.token_ttl})

    @app.post("/wechat/cgi-bin/message/template/send")
    async def template_send(request: Request, access_token: str = "") -> Response:
        fault = _fault(state)
        epoch = await _delay(state, fault)
        if fault == "server_error":
            return PlainTextResponse("upstream unavailable", 503)
        if access_token not in state.tokens or fault == "bad_signature":
            return JSONResponse({"errcode": 40001, "errmsg": "invalid credential"})
        if state.tokens[access_token] <= time.monotonic():
            return JSONResponse({"errcode": 42001, "errmsg": "access_token expired"})
        if fault == "throttle":
            return JSONResponse({"errcode": 45009, "errmsg": "reach max api daily quota limit"})
        message = await request.json()
        if message.get("template_id") in state.unapproved_templates:
            return JSONResponse({"errcode": 40037, "errmsg": "invalid template_id"})
        if not str(message.get("touser", "")).startswith("o"):
            return JSONResponse({"errcode": 40003, "errmsg": "invalid openid"})
        data = {k: str(v.get("value", "")) for k, v in message.get("data", {}).items()}
        state.record(
            Received("wechat", message["touser"], message["template_id"], data, message.get("url")), epoch
        )
        return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": 200228332 + len(state.received)})

    @app.post("/_control/faults")
    async def control_faults(kind: FaultKind, count: int = 1) -> dict[str, int]:
        state.fail_next(kind, count)
        return {"queued": len(state.faults)}

    @app.post("/_control/expire-tokens")
    async def control_expire() -> dict[str, int]:
        state.expire_wechat_tokens()
        return {"expired": len(state.tokens)}

    @app.post("/_control/reset")
    async def control_reset() -> dict[str, bool]:
        state.reset()
        return {"reset": True}

    @app.get("/_control/received")
    async def control_received() -> list[dict[str, Any]]:
        return [asdict(r) for r in state.received]

    return app


class ProviderServer:
    """Runs :func:`build_app` with uvicorn on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, state: ProviderState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state or ProviderState()
        config = uvicorn.Config(
            build_app(self.state), host=host, port=port, log_level="warning", lifespan="off", ws="none"
        )
        config.timeout_graceful_shutdown = 1
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="provider-server", daemon=True)
        self.base_url = ""

    def start(self) -> ProviderServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("provider server did not start")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        return self

    def url(self, provider: Literal["aliyun", "tencent", "wechat"]) -> str:
        return f"{self.base_url}/{provider}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
