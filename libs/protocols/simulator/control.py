"""The control port: JSON lines over TCP on 127.0.0.1, one request and one reply per line.

Request ``{"op": NAME, ...}``; reply ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
Meters are named ``bus/address`` (e.g. ``c1-b1/000000000001``).

====================  ==================================================================
op                    arguments
====================  ==================================================================
``status``            — (returns the bus endpoints)
``meter``             ``meter`` (returns registers, relay/valve, balance, meter clock)
``offline``           ``meter``, ``on`` (default true)
``dead``              ``concentrator``, ``on`` (default true)
``link``              ``bus``, ``kind`` (corrupt/split/delay/drop, or null to clear),
                      ``index``, ``mask``, ``seconds``, ``count``
``rollover``          ``meter``, ``value`` (default 999999.9)
``replace``           ``meter``, ``new_address`` (optional)
``drift``             ``meter``, ``ppm`` and/or ``offset_s``
``relay``             ``meter``, ``closed`` (relay or valve, as from the field)
``recharge``          ``meter``, ``amount``
``line``              ``bus``, ``baud`` (the DTU's line speed, after a meter's 17H change)
``advance``           ``seconds`` (only when the site runs on a manual clock)
====================  ==================================================================
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .clock import ManualClock
from .faults import LinkFault
from .runtime import Site
from .tcpserver import TcpServer


def meter_view(site: Site, meter_id: str) -> dict[str, Any]:
    """The state of one meter as JSON (advanced to now first)."""
    state = site.meter(meter_id).state
    state.advance()
    return {
        "address": state.address,
        "total": round(state.total, 2),
        "rates": {k: round(v, 2) for k, v in state.rates.items()},
        "relay_closed": state.relay_closed,
        "balance": round(state.balance, 2),
        "purchases": state.purchases,
        "meter_time": state.meter_time().isoformat(),
        "replaced": state.replaced_count,
    }


def apply(site: Site, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one control request; return the reply (never raises for a bad request)."""
    op = request.get("op")
    try:
        if op == "status":
            return {"ok": True, "buses": site.endpoints()}
        if op == "meter":
            return {"ok": True, "meter": meter_view(site, request["meter"])}
        if op == "offline":
            site.set_offline(request["meter"], bool(request.get("on", True)))
        elif op == "dead":
            site.set_dead(request["concentrator"], bool(request.get("on", True)))
        elif op == "link":
            kind = request.get("kind")
            fault = (
                None
                if kind is None
                else LinkFault(
                    kind=kind,
                    index=int(request.get("index", -2)),
                    mask=int(request.get("mask", 1)),
                    seconds=float(request.get("seconds", 0.2)),
                    count=request.get("count"),
                )
            )
            site.set_link_fault(request["bus"], fault)
        elif op == "rollover":
            site.rollover(request["meter"], float(request.get("value", 999999.9)))
        elif op == "replace":
            site.replace(request["meter"], request.get("new_address"))
        elif op == "drift":
            site.drift(request["meter"], request.get("ppm"), request.get("offset_s"))
        elif op == "relay":
            site.meter(request["meter"]).state.set_relay(bool(request["closed"]))
        elif op == "line":
            site.set_line_speed(request["bus"], int(request["baud"]))
        elif op == "recharge":
            site.meter(request["meter"]).state.recharge(float(request["amount"]))
        elif op == "advance":
            if not isinstance(site.clock, ManualClock):
                return {"ok": False, "error": "advance needs a manual clock"}
            return {"ok": True, "now": site.clock.advance(float(request["seconds"])).isoformat()}
        else:
            return {"ok": False, "error": f"unknown op {op!r}"}
    except (KeyError, ValueError, TypeError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True}


class ControlPort(TcpServer):
    """A JSON-lines TCP server driving :func:`apply` on a site."""

    def __init__(self, site: Site, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.site = site

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one JSON line per request line."""
        while line := await reader.readline():
            try:
                request = json.loads(line)
                reply = (
                    apply(self.site, request)
                    if isinstance(request, dict)
                    else {"ok": False, "error": "request must be a JSON object"}
                )
            except json.JSONDecodeError as exc:
                reply = {"ok": False, "error": f"bad JSON: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
