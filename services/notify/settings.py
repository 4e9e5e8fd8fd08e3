"""Settings of the notify service (env prefix ``MF_``, fields ``MF_NOTIFY_*``).

``MF_NOTIFY_SMS_TEMPLATES`` / ``MF_NOTIFY_WECHAT_TEMPLATES`` map every notice template
(:class:`libs.events.notify.Template`) to the provider's approved template code / id; a map that
leaves one out is refused at start. The defaults (``SMS_<NAME>``, ``TPL_<NAME>``) suit the memory
providers and the local provider server.

The default providers are ``memory``: messages are checked like a provider would and logged,
never sent — so `meterflow dev` starts without credentials. Choose ``aliyun`` or ``tencent`` for
SMS and ``wechat`` for WeChat, with their credentials; the base URLs are overridable (tests and
the dev stack point them at :mod:`services.notify.testing.provider_server`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from libs.settings import CommonSettings
from services.notify.delivery import Limits
from services.notify.providers import aliyun, tencent, wechat
from services.notify.templates import Template


def _codes(prefix: str) -> dict[str, str]:
    return {t.value: f"{prefix}{t.value.upper()}" for t in Template}


class NotifySettings(CommonSettings):
    """Ports, state, providers and delivery limits of the notify service."""

    notify_http_port: int = Field(
        default=8704, ge=1, le=65535, description="notify /healthz, /readyz, /metrics, /sends"
    )
    notify_faust_port: int = Field(default=6068, ge=1, le=65535, description="Faust's own (unused) web port")
    notify_state_dir: Path | None = Field(default=None, description="snapshots; default MF_STATE_DIR/notify")
    notify_snapshot_every_s: float = Field(
        default=60.0,
        gt=0,
        description="seconds between state snapshots (a crash replays at most this much input; each "
        "snapshot holds the interpreter while pickling, ~0.1 s per few thousand accounts)",
    )
    notify_max_age_s: float = Field(default=86_400.0, gt=0, description="facts older than this notify nobody")

    notify_sms_provider: Literal["memory", "aliyun", "tencent"] = Field(
        default="memory", description="SMS gateway"
    )
    notify_wechat_provider: Literal["memory", "wechat"] = Field(default="memory", description="WeChat sender")
    notify_sms_sign_name: str = Field(default="meterflow", description="approved SMS signature (签名)")
    notify_sms_templates: dict[str, str] = Field(
        default_factory=lambda: _codes("SMS_"),
        description="notice template → provider SMS template code (JSON)",
    )
    notify_wechat_templates: dict[str, str] = Field(
        default_factory=lambda: _codes("TPL_"), description="notice template → WeChat template id (JSON)"
    )
    notify_wechat_url: str | None = Field(default=None, description="link opened from a WeChat message")
    notify_http_timeout_s: float = Field(default=10.0, gt=0, description="timeout of one provider request")

    notify_aliyun_base_url: str = Field(
        default=aliyun.DEFAULT_BASE_URL, description="Aliyun dysmsapi endpoint"
    )
    notify_aliyun_access_key_id: str = Field(default="", description="Aliyun AccessKeyId")
    notify_aliyun_access_key_secret: SecretStr = Field(default=SecretStr(""), description="Aliyun secret")
    notify_aliyun_region: str = Field(default="cn-hangzhou", description="Aliyun RegionId")
    notify_tencent_base_url: str = Field(default=tencent.DEFAULT_BASE_URL, description="Tencent SMS endpoint")
    notify_tencent_secret_id: str = Field(default="", description="Tencent SecretId")
    notify_tencent_secret_key: SecretStr = Field(default=SecretStr(""), description="Tencent SecretKey")
    notify_tencent_sdk_app_id: str = Field(default="", description="Tencent SmsSdkAppId")
    notify_tencent_region: str = Field(default="ap-guangzhou", description="Tencent region")
    notify_wechat_base_url: str = Field(default=wechat.DEFAULT_BASE_URL, description="WeChat API endpoint")
    notify_wechat_appid: str = Field(default="", description="official-account appid")
    notify_wechat_secret: SecretStr = Field(default=SecretStr(""), description="official-account appsecret")

    notify_dedupe_window_s: float = Field(
        default=12 * 3600, gt=0, description="same notice not re-sent within"
    )
    notify_burst: int = Field(default=3, ge=1, description="messages one recipient may get in a burst")
    notify_refill_every_s: float = Field(
        default=600, gt=0, description="one more message allowed per interval"
    )
    notify_max_attempts: int = Field(default=5, ge=1, description="attempts before the dead-letter topic")
    notify_backoff_base_s: float = Field(default=30, gt=0, description="delay after the first failed attempt")
    notify_backoff_cap_s: float = Field(default=3600, gt=0, description="longest delay between attempts")

    @model_validator(mode="after")
    def _complete(self) -> NotifySettings:
        problems = []
        known = {t.value for t in Template}
        for name, codes in (("SMS", self.notify_sms_templates), ("WECHAT", self.notify_wechat_templates)):
            unknown, missing = set(codes) - known, known - set(codes)
            if unknown or missing:
                problems.append(
                    f"MF_NOTIFY_{name}_TEMPLATES: unknown {sorted(unknown)}, missing {sorted(missing)}"
                )
        needs = {
            "aliyun": [("ACCESS_KEY_ID", self.notify_aliyun_access_key_id),
                       ("ACCESS_KEY_SECRET", self.notify_aliyun_access_key_secret.get_secret_value())],
            "tencent": [("SECRET_ID", self.notify_tencent_secret_id),
                        ("SECRET_KEY", self.notify_tencent_secret_key.get_secret_value()),
                        ("SDK_APP_ID", self.notify_tencent_sdk_app_id)],
            "wechat": [("APPID", self.notify_wechat_appid),
                       ("SECRET", self.notify_wechat_secret.get_secret_value())],
        }  # fmt: skip
        for provider in (self.notify_sms_provider, self.notify_wechat_provider):
            for field_name, value in needs.get(provider, []):
                if not value:
                    problems.append(f"MF_NOTIFY_{provider.upper()}_{field_name}: required for {provider}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def snapshot_dir(self) -> Path:
        """Directory of the worker's snapshots."""
        return (self.notify_state_dir or self.state_dir / "notify").resolve()

    @property
    def limits(self) -> Limits:
        """The delivery policy's limits."""
        return Limits(
            dedupe_window=timedelta(seconds=self.notify_dedupe_window_s),
            bucket_capacity=self.notify_burst,
            refill_every=timedelta(seconds=self.notify_refill_every_s),
            max_attempts=self.notify_max_attempts,
            backoff_base=timedelta(seconds=self.notify_backoff_base_s),
            backoff_cap=timedelta(seconds=self.notify_backoff_cap_s),
        )
