"""Configuration shared by every service: one pydantic-settings object per service, prefix ``MF_``.

Services subclass :class:`CommonSettings` and add their own fields; :func:`load` validates at
start and turns a validation failure into :class:`ConfigError`, whose message names the bad
environment variable and the value it had.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class ConfigError(Exception):
    """Invalid configuration; the message names every bad field as its environment variable."""


class CommonSettings(BaseSettings):
    """Where the broker and ClickHouse are, where local state lives, how to log."""

    model_config = SettingsConfigDict(env_prefix="MF_", extra="ignore", frozen=True)

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers host:port[,host:port]; unset = embedded Tansu"
    )
    clickhouse_dsn: str | None = Field(
        default=None,
        description="ClickHouse DSN: http(s)://user:pass@host:8123/db or chdb:///path; unset = chDB",
    )
    state_dir: Path = Field(default=Path(".meterflow"), description="local state of the embedded stack")
    project_id: str = Field(default="demo", min_length=1, description="default project (tenant) id")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="log level")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for server in value.split(","):
            if not _HOSTPORT.match(server.strip()):
                raise ValueError(f"{server!r} is not host:port")
            port = int(server.rsplit(":", 1)[1])
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range")
        return value

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://", "chdb:")):
            raise ValueError("must start with http://, https:// or chdb:")
        return value

    @property
    def embedded_broker(self) -> bool:
        """True when no external Kafka is configured."""
        return self.kafka_bootstrap is None

    @property
    def clickhouse_target(self) -> str:
        """The DSN to open: the configured one, or the embedded chDB store under ``state_dir``."""
        return self.clickhouse_dsn or f"chdb://{(self.state_dir / 'clickhouse').resolve()}"


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, raising :class:`ConfigError` naming each bad field."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "?"
            env = f"{prefix}{name}".upper()
            got = os.environ.get(env)
            shown = f" (got {got!r})" if got is not None else ""
            problems.append(f"{env}: {err['msg']}{shown}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def describe(cls: type[BaseSettings]) -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every field: the README's config table."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    rows = []
    for name, info in cls.model_fields.items():
        default = "" if info.default is None else str(info.default)
        rows.append((f"{prefix}{name}".upper(), default, info.description or ""))
    return rows
