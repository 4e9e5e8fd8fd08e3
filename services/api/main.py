"""`meterflow api [--check-config]`: the HTTP API (one uvicorn worker per replica)."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from libs.events.topics import CATALOGUE
from libs.settings import ConfigError, load
from libs.stack.broker import BrokerError, check_reachable, ensure_topics
from libs.stack.clickhouse import StoreError, open_client
from libs.stack.runtime import setup_logging
from services.api.app import create_app
from services.api.settings import ApiSettings

log = logging.getLogger("meterflow.api")


def _local_secret(path: Path) -> str:
    """A random secret kept in ``path`` (mode 0600), created on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


def with_local_secrets(settings: ApiSettings) -> ApiSettings:
    """Fill an unset JWT secret and first-admin password from files under ``MF_STATE_DIR/api``
    (one host, e.g. the dev stack); several replicas must share ``MF_API_JWT_SECRET`` instead."""
    folder = settings.state_dir.resolve() / "api"
    update: dict[str, SecretStr] = {}
    if not settings.api_jwt_secret.get_secret_value():
        update["api_jwt_secret"] = SecretStr(_local_secret(folder / "jwt-secret"))
        log.warning(
            "MF_API_JWT_SECRET unset: using %s (set it when running several replicas)", folder / "jwt-secret"
        )
    if not settings.api_webhook_key.get_secret_value():
        update["api_webhook_key"] = SecretStr(_local_secret(folder / "webhook-key"))
    if not settings.api_admin_password.get_secret_value():
        update["api_admin_password"] = SecretStr(_local_secret(folder / "admin-password"))
        log.info("first administrator %r: password in %s", settings.api_admin_user, folder / "admin-password")
    return settings.model_copy(update=update)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow api`."""
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow api`."""
    try:
        settings = load(ApiSettings)
        if 0 < len(settings.api_jwt_secret.get_secret_value()) < 32:
            raise ConfigError("MF_API_JWT_SECRET: at least 32 characters")
        if args.check_config:
            print(f"configuration ok: {settings.model_dump_json()}")  # secrets print as '**********'
            return 0
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            raise ConfigError("MF_KAFKA_BOOTSTRAP: required (meterflow dev sets it)")
        check_reachable(bootstrap)
        clickhouse = open_client(settings.clickhouse_target)
    except (ConfigError, BrokerError, StoreError) as exc:
        print(f"meterflow api: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    settings = with_local_secrets(settings)
    ensure_topics(bootstrap, CATALOGUE)
    app = create_app(settings, bootstrap, clickhouse)
    # uvicorn handles SIGTERM: it stops accepting, drains requests, then runs the lifespan's exit
    # (read model and producer closed).
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning", access_log=False)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="meterflow api")
    configure(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
