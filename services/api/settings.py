"""Settings of the API service (env prefix ``MF_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from libs.settings import CommonSettings
from services.api.sendlog import SENDS_KEPT


class ApiSettings(CommonSettings):
    """Port, token signing, the first administrator of a fresh install, read-your-writes waits."""

    api_port: int = Field(default=8705, ge=1, le=65535, description="API HTTP port")
    api_host: str = Field(default="0.0.0.0", description="API listen address")
    api_jwt_secret: SecretStr = Field(
        default=SecretStr(""), description="HMAC secret signing access tokens (required, >= 32 chars)"
    )
    api_token_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600, description="access token lifetime")
    api_admin_user: str = Field(default="admin", min_length=1, description="first administrator's username")
    api_admin_password: SecretStr = Field(
        default=SecretStr(""), description="first administrator's password; created only when no user exists"
    )
    api_apply_timeout_s: float = Field(
        default=2.0, ge=0, le=30, description="how long a write waits until its effect is readable"
    )
    api_ready_timeout_s: float = Field(
        default=60.0, gt=0, description="catch-up time before giving up at start"
    )
    api_webhook_key: SecretStr = Field(
        default=SecretStr(""),
        description="key sealing webhook signing secrets on mf.iam (generated per host)",
    )
    api_webhooks_deliver: bool = Field(default=True, description="deliver webhooks from this replica")
    api_sends_kept: int = Field(
        default=SENDS_KEPT,
        ge=0,
        description="newest notifications per project GET /notifications keeps in memory",
    )
    api_wechatpay_api_v3_key: SecretStr = Field(
        default=SecretStr(""),
        description="WeChat Pay APIv3 key (32 characters); unset = no WeChat Pay notify",
    )
    api_wechatpay_platform_key_file: Path | None = Field(
        default=None, description="WeChat Pay platform certificate or public key (PEM)"
    )
    api_wechatpay_serial: str = Field(
        default="", description="its Wechatpay-Serial (certificate serial or key id)"
    )
    api_wechatpay_mchid: str = Field(
        default="", description="our merchant id (商户号), checked on each notice"
    )
    api_wechatpay_appid: str = Field(default="", description="our app id, checked on each notice")
    api_alipay_app_id: str = Field(default="", description="Alipay app id; unset = no Alipay notify")
    api_alipay_public_key_file: Path | None = Field(
        default=None, description="the Alipay public key (支付宝公钥) of the app (PEM)"
    )
    api_alipay_seller_id: str = Field(
        default="", description="our Alipay PID (2088…), checked on each notice"
    )
