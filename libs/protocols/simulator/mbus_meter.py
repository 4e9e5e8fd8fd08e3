"""An EN 13757-3 wired M-Bus meter (water, gas, heat or electricity), primary addressing.

Requests are decoded and replies encoded by :mod:`libs.protocols.mbus` only. Link layer as
EN 13757-2 clause 5 has it for a slave:

- ``SND_NKE`` (``10 40 A CS 16``): link reset, answered with ``E5``; the next REQ_UD2 is new.
- ``REQ_UD2`` (``10 5B/7B A CS 16``): answered with RSP_UD (``68 L L 68 08 A 72 ...``), CI 72
  variable data: identification number, manufacturer, version, medium, access number, status,
  then records. The frame count bit FCB (5B vs 7B) toggles per new request; a request with the
  same FCB as the last one is a repeat after a lost reply, so the meter sends the *same*
  telegram again (same access number) instead of a new one (clause 5.4, FCB/FCV).
- ``SND_UD`` CI 51 with a ``01 7A nn`` record: new primary address, answered ``E5``; CI 50
  (application reset): ``E5``.
- Address 254 (FE) reaches every slave and each answers (point-to-point buses only: on a
  shared bus their replies collide); 255 (FF) reaches every slave and none answers.

Records of the RSP_UD (EN 13757-3 clause 6.3, Table 10 VIFs):

==================  =============================================  ======================
medium              records                                        units on the wire
==================  =============================================  ======================
water 07 / gas 03   volume ``0C 13``, flow ``04 3B``               litres, l/h
heat 04             energy ``0C 06``, volume ``0C 13``, power       kWh, litres, W, l/h,
                    ``04 2B``, flow ``04 3B``, flow/return          0.1 °C
                    temperature ``02 5A`` / ``02 5E``
electricity 02      energy ``0C 04``, power ``04 2B``              10 Wh, W
all                 fabrication number ``0C 78``, time point ``04 6D`` (type F)
==================  =============================================  ======================
"""

from __future__ import annotations

from libs.protocols import mbus
from libs.protocols.mbus import MBusFrame, MBusHeader

from .site import MeterModel
from .state import MeterState

MEDIUM = {"water": 0x07, "gas": 0x03, "heat": 0x04, "electricity": 0x02}
VERSION = 0x01
# A heat meter's volume follows its energy at a 20 K spread: 1 m³ of water carries 1.163 kWh/K.
KWH_PER_M3 = 1.163 * 20
FLOW_TEMPERATURE, RETURN_TEMPERATURE = 60.0, 40.0
BCD8 = 10**8


class MBusMeter:
    """One M-Bus slave on a bus; its primary address is the site's ``address``."""

    def __init__(self, state: MeterState, model: MeterModel) -> None:
        self.state = state
        self.model = model
        self.ident = state.ident or state.address.zfill(8)
        self.medium = MEDIUM[model.kind]
        self.access_no = 0
        self._last_fcb: bool | None = None  # None: link reset, the next REQ_UD2 is new
        self._last_reply: bytes | None = None

    @property
    def primary(self) -> int:
        """The primary address 0..250."""
        return int(self.state.address)

    def handle(self, frame: MBusFrame) -> bytes | None:
        """Answer a request for this slave (or 254); act silently on 255."""
        if frame.kind == "ack" or not frame.control & 0x40:
            return None  # a slave's frame (PRM = 0): not for us
        if frame.address not in (self.primary, mbus.BROADCAST_REPLY, mbus.BROADCAST):
            return None
        reply = self._act(frame)
        return None if frame.address == mbus.BROADCAST else reply

    def _act(self, frame: MBusFrame) -> bytes | None:
        function = frame.control & 0x0F
        if frame.kind == "short" and frame.control == mbus.SND_NKE:
            self._last_fcb, self._last_reply = None, None
            return mbus.encode(MBusFrame("ack"))
        if frame.kind == "short" and function == mbus.REQ_UD2 & 0x0F:
            fcb = bool(frame.control & mbus.FCB)
            repeat = frame.control & mbus.FCV and self._last_fcb == fcb and self._last_reply
            if repeat and self._last_reply is not None:
                return self._last_reply
            self._last_fcb = fcb if frame.control & mbus.FCV else None
            self._last_reply = mbus.encode(self.rsp_ud())
            return self._last_reply
        if frame.kind == "long" and function == mbus.SND_UD & 0x0F:
            if frame.ci == mbus.CI_APPLICATION_RESET:
                return mbus.encode(MBusFrame("ack"))
            if frame.ci == mbus.CI_DATA_SEND:
                return self._data_send(frame)
        return None

    def _data_send(self, frame: MBusFrame) -> bytes | None:
        records = mbus.parse_records(frame.data)  # FrameError: a bad SND_UD is ignored by the bus
        for record in records:
            if record.name == "bus_address" and isinstance(record.value, int):
                if frame.address == mbus.BROADCAST or not 0 <= record.value <= 250:
                    return None  # never re-address every slave at once
                self.state.address = str(record.value)
        return mbus.encode(MBusFrame("ack"))

    # -- the telegram -----------------------------------------------------------------
    def rsp_ud(self) -> MBusFrame:
        """The RSP_UD telegram with the meter's registers now (access number counts up)."""
        state = self.state
        state.advance()
        self.access_no = (self.access_no + 1) & 0xFF
        header = MBusHeader(self.ident, self.model.manufacturer, VERSION, self.medium, self.access_no, 0, 0)
        return mbus.build_rsp_ud(self.primary, header, self.records())

    def records(self) -> bytes:
        """The data records of the telegram (see the module docstring)."""
        state = self.state
        rec = mbus.encode_record
        rate = state.flow_rate()  # m³/h for water/gas, kW for heat/electricity
        kind = self.model.kind
        if kind == "heat":
            volume_l = state.total / KWH_PER_M3 * 1000
            body = (
                rec(b"\x06", int(state.total) % BCD8, 0x0C)
                + rec(b"\x13", int(volume_l) % BCD8, 0x0C)
                + rec(b"\x2b", int(rate * 1000))
                + rec(b"\x3b", int(rate / KWH_PER_M3 * 1000))
                + rec(b"\x5a", int(FLOW_TEMPERATURE * 10) if rate else 0, 0x02)
                + rec(b"\x5e", int(RETURN_TEMPERATURE * 10) if rate else 0, 0x02)
            )
        elif kind == "electricity":
            body = rec(b"\x04", int(state.total * 100) % BCD8, 0x0C) + rec(b"\x2b", int(rate * 1000))
        else:
            body = rec(b"\x13", int(state.total * 1000) % BCD8, 0x0C) + rec(b"\x3b", int(rate * 1000))
        meter_time = state.meter_time().replace(tzinfo=None)
        return body + rec(b"\x78", int(self.ident), 0x0C) + mbus.encode_time_record(meter_time)


def make_meter(protocol: str, state: MeterState, model: MeterModel) -> MBusMeter:
    """Factory used by :mod:`libs.protocols.simulator.runtime`."""
    return MBusMeter(state, model)
