"""A CJ/T 188-2004 water or gas meter: 901F metering read, A017 valve, A015 clock, 810A address.

Requests are decoded and replies encoded by :mod:`libs.protocols.cjt188` only. A model with
``reversed_di`` is a meter that reads and writes the data identifier high byte first: a
request in the standard order reaches it as a byte-swapped, unknown identifier and gets an
abnormal reply, as in the field.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_DOWN, Decimal

from libs.protocols import cjt188
from libs.protocols.cjt188 import Cjt188Frame
from libs.protocols.errors import FrameError

from .site import MeterModel
from .state import MeterState

METER_TYPES = {"water": 0x10, "gas": 0x30}
WILDCARD_TYPE = 0xAA
ST_VALVE_CLOSED = 0x01
ERR_UNKNOWN_DI = b"\x01\x00"  # ST with "abnormal" bit: the identifier is not supported


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_DOWN)


class Cjt188Meter:
    """One CJ/T 188 meter on a bus."""

    def __init__(self, state: MeterState, model: MeterModel) -> None:
        self.state = state
        self.model = model
        self.meter_type = METER_TYPES.get(model.kind, 0x10)
        self.order: cjt188.DiOrder = "swapped" if model.reversed_di else "standard"

    @property
    def wire_address(self) -> bytes:
        """The meter's address as sent on the wire (A0 first)."""
        return cjt188.address_from_display(self.state.address)

    def handle(self, frame: Cjt188Frame) -> bytes | None:
        """Answer a request addressed to this meter; act silently on a broadcast."""
        if frame.control & cjt188.REPLY:
            return None  # another meter's reply: not for us
        if frame.meter_type not in (self.meter_type, WILDCARD_TYPE):
            return None
        broadcast = frame.address == cjt188.BROADCAST
        if not broadcast and frame.address != self.wire_address:
            return None
        if broadcast and frame.control & 0x3F == cjt188.READ_ADDRESS:
            # Read address goes to AA..AA on purpose and is answered (point-to-point lines).
            self.state.advance()
            return cjt188.encode(
                cjt188.build_address_reply(
                    self.wire_address, self.meter_type, ser=frame.ser, di_order=self.order
                ),
                preamble=2,
            )
        di = frame.di
        if di is not None and frame.di_order != self.order:
            di = ((di & 0xFF) << 8) | (di >> 8)  # the meter reads the two bytes its own way
        self.state.advance()
        reply = self._act(frame, di)
        if broadcast or reply is None:
            return None
        return cjt188.encode(reply, preamble=2)

    def _act(self, frame: Cjt188Frame, di: int | None) -> Cjt188Frame | None:
        function = frame.control & 0x3F
        here = Cjt188Frame(
            self.meter_type, self.wire_address, frame.control, frame.di, frame.ser, frame.data, self.order
        )
        if function == cjt188.READ_DATA and di == cjt188.DI_METERING:
            return self._metering(frame.ser)
        if function == cjt188.WRITE_DATA and di == cjt188.DI_VALVE and frame.data:
            if frame.data[0] not in (cjt188.VALVE_OPEN, cjt188.VALVE_CLOSE):
                return cjt188.build_write_reply(here, ERR_UNKNOWN_DI, ok=False)
            self.state.set_relay(frame.data[0] == cjt188.VALVE_OPEN)
            return cjt188.build_write_reply(here, self._status())
        if function == cjt188.READ_ADDRESS and di == cjt188.DI_ADDRESS:
            return cjt188.build_address_reply(
                self.wire_address, self.meter_type, ser=frame.ser, di_order=self.order
            )
        if function == cjt188.WRITE_DATA and di == cjt188.DI_TIME:
            try:
                when = cjt188.time_written(replace(frame, di=di))
            except FrameError:
                return cjt188.build_write_reply(here, ERR_UNKNOWN_DI, ok=False)
            self.state.set_meter_time(when)
            return cjt188.build_write_reply(here, self._status())
        return cjt188.build_write_reply(here, ERR_UNKNOWN_DI, ok=False)

    def _status(self) -> bytes:
        return bytes([0 if self.state.relay_closed else ST_VALVE_CLOSED, 0])

    def _metering(self, ser: int) -> Cjt188Frame:
        state = self.state
        months = state.frozen_monthly
        monthly = months[max(months)].total if months else state.total  # last settlement day
        return cjt188.build_metering_reply(
            self.wire_address,
            self.meter_type,
            {"cumulative_flow": _money(state.total), "settlement_flow": _money(monthly)},
            meter_time=state.meter_time().strftime("%Y-%m-%dT%H:%M:%S"),
            valve="open" if state.relay_closed else "closed",
            ser=ser,
            di_order=self.order,
        )


def make_meter(protocol: str, state: MeterState, model: MeterModel) -> Cjt188Meter:
    """Factory used by :mod:`libs.protocols.simulator.runtime`."""
    return Cjt188Meter(state, model)
