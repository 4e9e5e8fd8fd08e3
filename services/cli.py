"""The `meterflow` command: one subcommand per service and tool.

Subcommands are imported lazily, so `meterflow frame decode` does not pay for Faust or chDB.
Each module named below exposes `configure(parser)` (adds its arguments) and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from libs.partitions import PartitionsSettingError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dev": ("libs.stack.dev", "start the embedded stack (Tansu broker, chDB store, services)"),
    "status": ("libs.stack.status", "report broker, topics, consumer-group lag and ClickHouse health"),
    "topics": ("libs.stack.topics_cli", "list or create the topics of the catalogue"),
    "events": ("libs.events.cli", "tail or inspect events on a topic"),
    "dead-letter": (
        "libs.stack.deadletter_cli",
        "list or retry the facts processors parked on mf.dead-letter",
    ),
    "archive": ("libs.stack.archive_cli", "archive the event log into ClickHouse, or restore topics from it"),
    "frame": ("libs.protocols.cli", "decode or encode meter protocol frames"),
    "simulate": ("libs.protocols.simulator.cli", "run a simulated site of meters behind concentrators"),
    "acquisition": ("services.acquisition.main", "poll meters on their buses and publish readings"),
    "billing": ("services.billing.main", "fold readings and money events into ledgers (Faust worker)"),
    "control": ("services.control.main", "decide and track relay / valve commands"),
    "notify": ("services.notify.main", "send SMS and WeChat notifications"),
    "api": ("services.api.main", "the HTTP API (FastAPI)"),
    "sink": ("services.api.analytics.main", "consume the topics into the ClickHouse analytics tables"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterflow",
        description="meterflow: remote meter reading and prepaid/postpaid billing.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()),
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="command")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        _top_parser().parse_args([name])  # prints the usage error and exits 2
    module_name, text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except PartitionsSettingError as exc:  # the topic catalogue is built at import
        print(f"meterflow {name}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"meterflow {name}: not built yet ({module_name} does not exist)", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"meterflow {name}", description=text)
    module.configure(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
