"""`meterflow notify --check-config`: defaults start without credentials; a chosen provider
without its credentials is refused, naming the environment variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from libs.settings import ConfigError, load
from services.notify.settings import NotifySettings
from services.notify.templates import Template


def check(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    return subprocess.run([sys.executable, "-m", "services.cli", "notify", "--check-config"],
                           env=clean | env, capture_output=True, text=True, timeout=60)  # fmt: skip


def test_defaults_need_no_credentials_and_secrets_are_not_printed() -> None:
    ok = check(
        MF_NOTIFY_WECHAT_PROVIDER="wechat", MF_NOTIFY_WECHAT_APPID="wx", MF_NOTIFY_WECHAT_SECRET="s3cr3t"
    )
    assert ok.returncode == 0, ok.stderr
    assert '"notify_sms_provider":"memory"' in ok.stdout and "s3cr3t" not in ok.stdout


def test_a_provider_without_credentials_is_refused() -> None:
    bad = check(MF_NOTIFY_SMS_PROVIDER="tencent", MF_NOTIFY_TENCENT_SECRET_ID="AKID")
    assert bad.returncode == 2
    assert "MF_NOTIFY_TENCENT_SECRET_KEY: required" in bad.stderr
    assert "MF_NOTIFY_TENCENT_SDK_APP_ID: required" in bad.stderr


def test_template_maps_must_cover_every_template() -> None:
    with pytest.raises(
        ConfigError, match=r"MF_NOTIFY_SMS_TEMPLATES: unknown \['bogus'\], missing \[.*'arrears'"
    ):
        load(NotifySettings, notify_sms_templates={"bogus": "SMS_1"})
    limits = load(NotifySettings, notify_max_attempts=2, notify_burst=9).limits
    assert (limits.max_attempts, limits.bucket_capacity) == (2, 9)


NEW = [
    "arrears_cleared",
    "low_balance_cleared",
    "meter_contact_restored",
    "power_restore_failed",
    "valve_open_failed",
]


def test_a_map_written_before_the_alarm_clear_and_restore_failure_notices_names_them_missing() -> None:
    defaults = load(NotifySettings)
    assert defaults.notify_sms_templates["power_restore_failed"] == "SMS_POWER_RESTORE_FAILED"
    assert set(defaults.notify_wechat_templates) == {t.value for t in Template} >= set(NEW)
    older = {t: code for t, code in defaults.notify_sms_templates.items() if t not in NEW}
    with pytest.raises(ConfigError, match=re.escape(f"MF_NOTIFY_SMS_TEMPLATES: unknown [], missing {NEW}")):
        load(NotifySettings, notify_sms_templates=older)
