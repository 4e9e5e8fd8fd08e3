"""Pieces every long-running meterflow process shares: settings loaded the same way, an HTTP
server for /healthz, /readyz and /metrics that leaves signal handling to its owner, and JSON-line
logging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Generator
from typing import TypeVar

import orjson
import uvicorn
from fastapi import FastAPI

from libs.settings import CommonSettings, ConfigError, load
from libs.stack.broker import BrokerError, check_reachable

S = TypeVar("S", bound=CommonSettings)


def service_settings(cls: type[S], command: str, check_config: bool) -> S | int:
    """A service's settings, validated, with a reachable ``MF_KAFKA_BOOTSTRAP`` — or the exit code
    to return: 0 after printing them for ``--check-config``, 2 (the reason on stderr) when they
    are invalid or the broker cannot be reached."""
    try:
        settings = load(cls)
        if check_config:
            print(f"configuration ok: {settings.model_dump_json()}")  # secrets print as '**********'
            return 0
        if not settings.kafka_bootstrap:
            raise ConfigError("MF_KAFKA_BOOTSTRAP: required (meterflow dev sets it)")
        check_reachable(settings.kafka_bootstrap)
    except (ConfigError, BrokerError) as exc:
        print(f"meterflow {command}: {exc}", file=sys.stderr)
        return 2
    return settings


class _QuietServer(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM capture: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """Serve a FastAPI app on host:port inside the running event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = _QuietServer(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; raises OSError when the port is taken."""
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # re-raise the bind failure
                raise OSError(f"HTTP server on port {self.server.config.port} did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop serving and wait for the server task."""
        self.server.should_exit = True
        if self.task is not None:
            await self.task


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message (and exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def setup_logging(level: str = "INFO") -> None:
    """Log JSON lines to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
