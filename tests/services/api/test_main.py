"""`meterflow api` configuration: --check-config, secrets never printed, per-host secrets."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from libs.settings import load
from services.api.main import run, with_local_secrets
from services.api.settings import ApiSettings


def test_check_config_validates_and_never_prints_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MF_API_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("MF_API_ADMIN_PASSWORD", "hunter2-hunter2")
    assert run(argparse.Namespace(check_config=True)) == 0
    out = capsys.readouterr().out
    assert "configuration ok" in out and "s" * 40 not in out and "hunter2" not in out
    monkeypatch.setenv("MF_API_JWT_SECRET", "short")
    assert run(argparse.Namespace(check_config=True)) == 2
    assert "MF_API_JWT_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("MF_API_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("MF_API_PORT", "99999")
    assert run(argparse.Namespace(check_config=True)) == 2
    assert "MF_API_PORT" in capsys.readouterr().err


def test_unset_secrets_are_generated_once_per_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MF_API_JWT_SECRET", "MF_API_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    settings = load(ApiSettings, state_dir=tmp_path)
    first, second = with_local_secrets(settings), with_local_secrets(settings)
    secret = first.api_jwt_secret.get_secret_value()
    assert len(secret) >= 32 and secret == second.api_jwt_secret.get_secret_value()
    assert first.api_admin_password.get_secret_value() == second.api_admin_password.get_secret_value()
    for name in ("jwt-secret", "admin-password"):
        assert stat.S_IMODE((tmp_path / "api" / name).stat().st_mode) == 0o600
