"""``meterflow acquisition``: poll the buses, publish readings and comm status, carry commands."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from libs.settings import ConfigError, load
from libs.stack.runtime import setup_logging
from services.acquisition.importer import ImportRejected
from services.acquisition.service import AcquisitionService, load_topology
from services.acquisition.settings import AcquisitionSettings


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the service's arguments (configuration itself comes from MF_* variables)."""
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")


async def _serve(service: AcquisitionService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    """Validate settings and topology; with ``--check-config`` exit, else serve until a signal."""
    try:
        settings = load(AcquisitionSettings)
        registry = load_topology(settings)
        if settings.kafka_bootstrap is None and not args.check_config:
            raise ConfigError("MF_KAFKA_BOOTSTRAP: required (meterflow dev sets it)")
    except (ConfigError, ImportRejected, OSError, ValueError) as exc:
        print(f"meterflow acquisition: {exc}", file=sys.stderr)
        return 2
    meters = len(registry.all_meters())
    if args.check_config:
        print(f"configuration ok: {meters} meters, http port {settings.acq_http_port}")
        return 0
    setup_logging(settings.log_level)
    try:
        asyncio.run(_serve(AcquisitionService(settings, registry)))
    except OSError as exc:
        print(f"meterflow acquisition: {exc}", file=sys.stderr)
        return 1
    return 0
