"""CJ/T 188-2004 driver: water / gas / heat meters, 901F metering read and A017 valve control.

A model fixes the meter type (10H cold water, 30H gas, 20H heat …) and the data identifier
byte order (some meters send it high byte first; CJ/T 188 clause 5.6 says low byte first).
Replies are decoded with either order and resolved against Table 4. The valve position comes
from status byte ST0 bits 0-1 of the 901F reply (00 open, 01 closed, 11 abnormal).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from libs.events.acquisition import Rate, SwitchState
from libs.protocols import cjt188
from libs.protocols.cjt188 import Cjt188Frame, DiOrder
from libs.protocols.drivers.base import CommandRejected, MeterRead, Request, check_names, run_plan
from libs.protocols.drivers.dlt645 import CHINA
from libs.protocols.transaction import Bus, Priority

# 901F value name → vocabulary name; volumes in litres are converted to m³.
NAMES: dict[str, str] = {
    "cumulative_flow": "volume_m3",
    "current_heat": "heat_kwh",
    "flow_rate": "flow_m3h",
}
_VALVES = {"open": SwitchState.OPEN, "closed": SwitchState.CLOSED}
_SCALE = {
    "L": Decimal("0.001"),
    "m3": Decimal(1),
    "kWh": Decimal(1),
    "MWh": Decimal(1000),
    "m3/h": Decimal(1),
}


class Cjt188Driver:
    """Reads CJ/T 188 meters of one model and drives their valves; addresses are 14 digits."""

    protocol = cjt188.PROTOCOL

    def __init__(self, meter_type: int = 0x10, di_order: DiOrder = "standard", tz: tzinfo = CHINA) -> None:
        self.meter_type = meter_type
        self.di_order = di_order
        self.tz = tz
        self.decode = cjt188.decode
        self._ser = itertools.count()

    @property
    def supported(self) -> list[str]:
        """Vocabulary names one 901F read yields."""
        heat = 0x20 <= self.meter_type <= 0x29
        return ["volume_m3", "meter_time", "valve", *(["heat_kwh", "flow_m3h"] if heat else [])]

    def _accept(self, address: bytes, control: int) -> Any:
        def accept(frame: Cjt188Frame) -> bool:
            return frame.address == address and frame.control & 0xBF == cjt188.REPLY | control

        return accept

    def plan(self, address: str, quantities: Iterable[str] | None = None) -> list[Request]:
        """One 901F read covers every quantity of the meter."""
        wanted = check_names(quantities, self.supported)
        missing = [q for q in wanted if q not in self.supported]
        if missing:
            raise ValueError(f"cjt188 meter type {self.meter_type:02X} cannot read {missing}")
        wire_address = cjt188.address_from_display(address)
        ser = next(self._ser) & 0xFF
        frame = cjt188.build_read(wire_address, self.meter_type, ser=ser, di_order=self.di_order)
        heat = 0x20 <= self.meter_type <= 0x29
        return [
            Request(
                "901F",
                cjt188.encode(frame),
                2 + 13 + (46 if heat else 22),
                self._accept(wire_address, cjt188.READ_DATA),
                self._fold,
            )
        ]

    def _fold(self, frame: Cjt188Frame, read: MeterRead) -> None:
        if frame.control & cjt188.ABNORMAL:
            status = frame.status or frame.data[:2]
            read.errors["901F"] = f"abnormal ST {status.hex().upper()}"
            return
        for name, entry in cjt188.metering_values(frame).items():
            value = entry["value"]
            if name in NAMES:
                scale = _SCALE.get(entry["unit"], Decimal(1))
                amount = Decimal(value) * scale
                if NAMES[name] == "flow_m3h":
                    read.instant["flow_m3h"] = amount
                else:
                    read.set_register(NAMES[name], Rate.TOTAL, amount)
            elif name == "meter_time":
                read.meter_time = datetime.fromisoformat(value).replace(tzinfo=self.tz)
            elif name == "valve":
                read.valve = _VALVES.get(value, SwitchState.UNKNOWN)

    async def valve_state(self, bus: Bus, address: str, priority: Priority = Priority.COMMAND) -> SwitchState:
        """Read the valve position back (CLOSED = no flow)."""
        read = await run_plan(bus, self.plan(address, ["valve"]), priority)
        return read.valve or SwitchState.UNKNOWN

    async def valve(self, bus: Bus, address: str, open_valve: bool) -> Cjt188Frame:
        """Open (55H) or close (99H) the valve: write A017 (clause 7.3); returns the 84H reply."""
        wire_address = cjt188.address_from_display(address)
        ser = next(self._ser) & 0xFF
        request = cjt188.build_valve(
            wire_address, self.meter_type, open_valve, ser=ser, di_order=self.di_order
        )
        reply: Cjt188Frame = await bus.transact(
            cjt188.encode(request),
            reply_size=2 + 13 + 2,
            accept=self._accept(wire_address, cjt188.WRITE_DATA),
            priority=Priority.COMMAND,
        )
        if reply.control & cjt188.ABNORMAL:
            status = (reply.status or reply.data[:2]).hex().upper()
            raise CommandRejected(
                f"valve {'open' if open_valve else 'close'} {address}", f"ST {status}", reply
            )
        return reply


def cjt188_driver(**model: Any) -> Cjt188Driver:
    """A CJ/T 188 driver (``meter_type``, ``di_order``, ``tz`` per model)."""
    return Cjt188Driver(**model)
