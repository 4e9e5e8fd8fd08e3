"""``meterflow frame``: decode captured meter frames, or build requests for field engineers.

``meterflow frame decode [--protocol auto|dlt645-2007|…] HEX…`` prints one JSON object per frame
(the codec's ``describe`` view plus ``consumed``); a bad or incomplete frame exits 2 with the
fault on stderr. ``auto`` tries every codec of :data:`libs.protocols.registry.PROTOCOL_MODULES`
that imports and takes the first, in registry order, whose frame decodes and describes cleanly.

``meterflow frame encode read|read-address|relay|time-sync|valve …`` prints the request in hex.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from datetime import datetime
from types import ModuleType
from typing import Any

from libs.protocols import dlt645, dlt645_1997
from libs.protocols.errors import FrameError
from libs.protocols.registry import PROTOCOL_MODULES

DLT = ("dlt645-2007", "dlt645-1997")
RELAY_ACTIONS = {a.name.lower().replace("_", "-"): a for a in dlt645.RelayAction}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``decode`` and ``encode`` subcommands."""
    sub = parser.add_subparsers(dest="action", required=True)
    dec = sub.add_parser("decode", help="decode hex bytes into JSON, one object per frame")
    dec.add_argument("--protocol", default="auto", choices=["auto", *PROTOCOL_MODULES])
    dec.add_argument("hex", nargs="+", help="frame bytes in hex; spaces allowed")

    enc = sub.add_parser("encode", help="build a request frame and print it in hex")
    enc.add_argument("--preamble", type=int, default=0, choices=range(5), help="FE wake-up bytes (0-4)")
    req = enc.add_subparsers(dest="request", required=True)
    read = req.add_parser("read", help="read one data identifier (DL/T 645)")
    read.add_argument("--protocol", default="dlt645-2007", choices=DLT)
    read.add_argument("--address", default=dlt645.WILDCARD, help="12 digits, display order")
    read.add_argument("--di", required=True, help="e.g. 00010000 (2007) or 9010 (1997)")
    req.add_parser("read-address", help="read the address of the only meter on the bus (2007)")
    relay = req.add_parser("relay", help="relay trip / close / alarm / keep-power (2007, 1CH)")
    relay.add_argument("--address", required=True)
    relay.add_argument("--action", required=True, choices=sorted(RELAY_ACTIONS))
    relay.add_argument("--password", default="02000000", help="PA P0 P1 P2, 8 hex digits")
    relay.add_argument("--operator", default="00000000", help="operator code, 8 hex digits")
    relay.add_argument("--valid-until", required=True, type=datetime.fromisoformat)
    sync = req.add_parser("time-sync", help="broadcast time synchronisation (08H)")
    sync.add_argument("--protocol", default="dlt645-2007", choices=DLT)
    sync.add_argument("--time", type=datetime.fromisoformat, default=None, help="ISO time; default now")
    sync.add_argument("--address", default=dlt645.BROADCAST)
    valve = req.add_parser("valve", help="open or close a water/gas valve (CJ/T 188)")
    valve.add_argument("--address", required=True, help="14 digits, display order")
    valve.add_argument("--action", required=True, choices=["open", "close"])
    valve.add_argument("--meter-type", type=lambda text: int(text, 16), default=0x10, help="hex, e.g. 10")


def run(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; exit code 0, or 2 for bad input."""
    try:
        if args.action == "decode":
            return _decode(args.protocol, "".join(args.hex))
        print(_encode(args).hex(" ").upper())
        return 0
    except FrameError as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    print(f"meterflow frame: {message}", file=sys.stderr)
    return 2


def _codecs(protocol: str) -> list[tuple[str, ModuleType]]:
    names = list(PROTOCOL_MODULES) if protocol == "auto" else [protocol]
    out = []
    for name in names:
        try:
            out.append((name, importlib.import_module(PROTOCOL_MODULES[name])))
        except ImportError:
            if protocol != "auto":
                raise FrameError(name, "protocol", "codec module is not available") from None
    return out


def _decode_one(buf: bytes, codecs: list[tuple[str, ModuleType]]) -> tuple[int, dict[str, Any] | None]:
    """Decode the first frame of ``buf`` with the first codec that parses it cleanly."""
    faults: list[str] = []
    strong = False  # a codec read a whole frame by its length and found it corrupt
    waiting: int | None = None
    for name, module in codecs:
        try:
            consumed, frame = module.decode(buf)
            if frame is None:
                waiting = consumed if waiting is None else min(waiting, consumed)
                continue
            view = dict(module.describe(frame))
        except FrameError as exc:
            faults.append(str(exc))
            strong = strong or exc.fault in ("checksum", "crc", "terminator")
            continue
        except Exception as exc:  # another team's codec failing is a fault of that codec only
            faults.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        view["consumed"] = consumed
        return consumed, view
    if waiting is not None and not strong:
        return waiting, None
    if len(faults) == 1:
        raise FrameError("frame", "decode", faults[0])
    raise FrameError("frame", "no-protocol", "no codec decodes it cleanly: " + "; ".join(faults))


def _decode(protocol: str, text: str) -> int:
    try:
        data = bytes.fromhex(text)
    except ValueError as exc:
        return _fail(f"not hex: {exc}")
    codecs = _codecs(protocol)
    pos = found = 0
    while pos < len(data):
        consumed, view = _decode_one(data[pos:], codecs)
        if view is None:
            if found and pos + consumed == len(data):
                print(f"meterflow frame: ignored {consumed} trailing byte(s)", file=sys.stderr)
                return 0
            return _fail(f"incomplete frame: {len(data) - pos} byte(s) left at offset {pos}, need more")
        print(json.dumps(view, default=str, ensure_ascii=False))
        found += 1
        pos += consumed
    return 0 if found else _fail("no bytes to decode")


def _encode(args: argparse.Namespace) -> bytes:
    preamble: int = args.preamble
    if args.request == "read":
        if args.protocol == "dlt645-1997":
            return dlt645_1997.encode(dlt645_1997.read(args.address, args.di), preamble)
        return dlt645.encode(dlt645.read(args.address, args.di), preamble)
    if args.request == "read-address":
        return dlt645.encode(dlt645.read_address(), preamble)
    if args.request == "relay":
        frame = dlt645.relay_control(
            args.address, RELAY_ACTIONS[args.action], args.valid_until, args.password, args.operator
        )
        return dlt645.encode(frame, preamble)
    if args.request == "time-sync":
        when = args.time or datetime.now().replace(microsecond=0)
        if args.protocol == "dlt645-1997":
            return dlt645_1997.encode(dlt645_1997.broadcast_time(when, args.address), preamble)
        return dlt645.encode(dlt645.broadcast_time(when, args.address), preamble)
    ((_, cjt188),) = _codecs("cjt188")
    address = cjt188.address_from_display(args.address)
    frame = cjt188.build_valve(address, args.meter_type, args.action == "open")
    return bytes(cjt188.encode(frame, preamble))
