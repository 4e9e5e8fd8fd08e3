"""``meterflow simulate``: run a simulated site until SIGINT/SIGTERM.

Prints one JSON line per bus (name, concentrator, protocol, link, ``tcp`` host:port and, with
``--pty``, the ``pty`` slave path for pyserial), then one line with the control port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tomllib

from .control import ControlPort
from .runtime import Site
from .site import default_site, load_site


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's arguments."""
    parser.add_argument("--site", help="site file (.json or .toml); the default site otherwise")
    parser.add_argument("--host", default="127.0.0.1", help="address the bus ports listen on")
    parser.add_argument(
        "--base-port",
        type=int,
        default=4600,
        help="TCP port of the first bus, then one per bus (0: free ports)",
    )
    parser.add_argument("--pty", action="store_true", help="also open one pseudo-terminal per bus")
    parser.add_argument(
        "--control-port", type=int, default=0, help="JSON-lines control port on 127.0.0.1 (0: a free port)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the response delays")


async def serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> int:
    """Start the site, print its endpoints, wait for ``stop`` (or a signal), shut down."""
    config = load_site(args.site) if args.site else default_site()
    site = Site(config, seed=args.seed)
    control = ControlPort(site, "127.0.0.1", args.control_port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await site.start(args.host, args.base_port, args.pty)
        await control.start()
        for line in site.endpoints():
            print(json.dumps(line), flush=True)
        print(json.dumps({"control": f"127.0.0.1:{control.port}"}), flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await control.stop()
        await site.stop()
    print(json.dumps({"stopped": config.name}), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT/SIGTERM; returns the exit code (2: bad site file)."""
    if args.site:
        try:
            load_site(args.site)
        except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:  # ValidationError is a ValueError
            print(f"meterflow simulate: {args.site}: {exc}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(serve(args))
    except OSError as exc:
        print(f"meterflow simulate: {exc}", file=sys.stderr)
        return 1
