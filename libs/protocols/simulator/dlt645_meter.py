"""A DL/T 645-2007 (or -1997) single-phase, optionally prepaid, electricity meter.

Requests are decoded and replies encoded by :mod:`libs.protocols.dlt645` (or
:mod:`libs.protocols.dlt645_1997`, which has reads and broadcast time only); the values of any
data identifier of :mod:`libs.protocols.catalogue` are looked up by the catalogue's item names
(``forward_active_energy_peak``, ``voltage_a``, ``daily_frozen_time_last_2`` …), so a new
identifier in the catalogue is served as soon as its name is known here. Functions served:
read 11H (in parts with read-follow-up 12H when the reply exceeds the model's
``max_reply_data``), read address 13H, broadcast time 08H, write data 14H (writable catalogue
items, with the model's password), freeze 16H (99999999: freeze now, also as a broadcast; other
patterns set the timed-freeze schedule), baud change 17H (the reply goes out at the old speed,
then the meter listens at the new one), relay control 1CH (with the model's password; expired
commands refused; keep-power blocks trips), meter clear 1AH (with the model's password: energy
registers and freezes to zero, see :meth:`MeterState.clear`). Event clear 1BH is not served: the
simulated meter keeps no event records (the abnormal reply says so).
"""

from __future__ import annotations

import importlib
import re
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal
from types import ModuleType
from typing import Any, cast

from libs.protocols import catalogue, dlt645
from libs.protocols import dlt645_frame as link
from libs.protocols.dlt645 import Frame, RelayAction
from libs.protocols.errors import FrameError

from .site import MeterModel, Rate
from .state import RATES, MeterState, Snapshot

ERR_OTHER, ERR_NO_DATA, ERR_UNAUTHORISED, ERR_BAUD = 0x01, 0x02, 0x04, 0x08
FREEZE_NOW = "99999999"
# Parameters a meter has before anyone writes them (catalogue names, yuan).
DEFAULT_SETTINGS = {
    "alarm_amount_1_limit": Decimal("20.00"),
    "alarm_amount_2_limit": Decimal("10.00"),
    "overdraft_amount_limit": Decimal("0.00"),
    "hoarding_amount_limit": Decimal("0.00"),
    "close_allowed_amount_limit": Decimal("0.00"),
}
RATE_INDEX: dict[str, Rate] = {"sharp": "sharp", "peak": "peak", "flat": "flat", "valley": "valley"}
PREAMBLE = 4  # real meters wake the line with four FE bytes
MISSING = object()
_ENERGY = re.compile(
    r"^(combined_active|forward_active|reverse_active|combined_reactive_1)_energy_"
    r"(total|sharp|peak|flat|valley)(?:_settlement_(\d+))?$"
)
_INSTANT = re.compile(
    r"^instant_frozen_(time|forward_active_energy_(total|sharp|peak|flat|valley))(?:_last_(\d+))?$"
)
_PRICE = re.compile(r"^tariff_price_(sharp|peak|flat|valley)$")
_DAILY = re.compile(
    r"^daily_frozen_(time|forward_active_energy_(total|sharp|peak|flat|valley))"
    r"(?:_last_(\d+))?$"
)


def _dec(value: float, decimals: int) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)


def _register(total: float, rates: dict[Rate, float], rate: str) -> float:
    return total if rate == "total" else rates[cast(Rate, rate)]


class Dlt645Meter:
    """One DL/T 645 meter on a bus; ``codec`` is :mod:`~libs.protocols.dlt645` or the 1997 one."""

    def __init__(self, state: MeterState, model: MeterModel, codec: ModuleType = dlt645) -> None:
        self.state = state
        self.model = model
        self.codec = codec
        fn = codec.Function
        self.reads = {fn.READ, getattr(fn, "READ_AGAIN", fn.READ)}
        self.time_sync = fn.BROADCAST_TIME
        self.read_address = getattr(fn, "READ_ADDRESS", None)
        self.relay = getattr(fn, "RELAY", None)
        self.freeze = getattr(fn, "FREEZE", None)
        # Follow-up frames, writes and baud changes as DL/T 645-2007 lays them out; the 1997
        # edition has these functions with other layouts, not simulated.
        edition_2007 = codec is dlt645
        self.follow = fn.READ_FOLLOW if edition_2007 else None
        self.write = fn.WRITE if edition_2007 else None
        self.change_baud = fn.CHANGE_BAUD if edition_2007 else None
        self.meter_clear = fn.METER_CLEAR if edition_2007 else None
        self.pending: dict[str, list[Any]] = {}  # DI -> reply parts still to fetch with 12H

    def matches(self, address: str) -> bool:
        """True when ``address`` (display order, ``AA`` pairs are wildcards) names this meter."""
        mine = self.state.address.zfill(12)
        return all(
            a == "AA" or a == m
            for a, m in zip(
                (address[i : i + 2] for i in range(0, 12, 2)),
                (mine[i : i + 2] for i in range(0, 12, 2)),
                strict=True,
            )
        )

    def handle(self, frame: Any) -> bytes | None:
        """Answer a request addressed to this meter; act silently on a broadcast."""
        if frame.reply:
            return None
        if frame.address == link.BROADCAST:
            if frame.function == self.time_sync:
                self.state.advance()
                self.state.set_meter_time(link.datetime_from_wire(frame.data, self.codec.PROTOCOL))
            elif frame.function == self.freeze and self.freeze is not None:
                self._freeze(frame)
            return None
        if not self.matches(frame.address):
            return None
        self.state.advance()
        reply = self._act(frame)
        return None if reply is None else bytes(self.codec.encode(reply, preamble=PREAMBLE))

    # -- functions --------------------------------------------------------------------
    def _act(self, frame: Any) -> Any:
        address = self.state.address.zfill(12)
        fn = frame.function
        codec = self.codec
        if fn in self.reads and frame.di is not None:
            return self._read(address, frame.di, fn)
        if fn == self.follow and frame.di is not None:
            parts = self.pending.get(frame.di, [])
            seq = frame.data[4]
            return parts[seq] if 0 < seq < len(parts) else codec.error_reply(address, fn, ERR_NO_DATA)
        if fn == self.read_address:
            return codec.Frame(address, 0x80 | fn, link.address_to_wire(address, codec.PROTOCOL))
        if fn == self.relay:
            code = self._relay(frame)
            return codec.error_reply(address, fn, code) if code else codec.Frame(address, 0x80 | fn)
        if fn == self.write:
            code = self._write(frame)
            return codec.error_reply(address, fn, code) if code else codec.Frame(address, 0x80 | fn)
        if fn == self.meter_clear:
            code = self._clear(frame)
            return codec.error_reply(address, fn, code) if code else codec.Frame(address, 0x80 | fn)
        if fn == self.freeze:
            code = self._freeze(frame)
            return codec.error_reply(address, fn, code) if code else codec.Frame(address, 0x80 | fn)
        if fn == self.change_baud:
            baud = dlt645.requested_baud(frame)
            if baud is None:
                return codec.error_reply(address, fn, ERR_BAUD)
            self.state.baud = baud  # this reply still goes out at the old speed
            return codec.Frame(address, 0x80 | fn, frame.data)
        if fn == self.time_sync:
            return None  # time sync is only accepted as a broadcast
        return codec.error_reply(address, fn, ERR_OTHER)

    def _read(self, address: str, di: str, fn: int) -> Any:
        item = catalogue.lookup(di)
        if item is None:
            return self.codec.error_reply(address, fn, ERR_NO_DATA)
        members = item.members or (item,)
        if item.variable:  # energy blocks: total + the four rates this meter has
            members = members[: 1 + len(RATES)]
        values = [self.quantity(m.name, m.decimals) for m in members]
        if all(v is MISSING for v in values):
            return self.codec.error_reply(address, fn, ERR_NO_DATA)
        filled = [None if v is MISSING else v for v in values]
        value = filled if item.members else filled[0]
        try:
            if self.follow is None:  # DL/T 645-1997: no follow-up frames
                return self.codec.read_reply(address, di, value)
            parts = dlt645.read_parts(address, di, value, self.model.max_reply_data)
        except FrameError:  # a value out of range for its format: the meter has no such data
            return self.codec.error_reply(address, fn, ERR_NO_DATA)
        if len(parts) > 1:
            self.pending = {di: parts}  # a new read forgets the parts of the last one
        return parts[0]

    def _write(self, frame: Frame) -> int:
        """Carry out a 14H write; return 0 or the error-status byte."""
        try:
            command = dlt645.write_command(frame)
        except FrameError:
            return ERR_OTHER
        if command.password.upper() != self.model.password.upper():
            return ERR_UNAUTHORISED
        item = catalogue.lookup(command.di)
        if item is None:
            return ERR_NO_DATA
        if not item.writable:
            return ERR_UNAUTHORISED
        try:
            written = catalogue.decode_data(command.di, command.data)
        except FrameError:
            return ERR_OTHER
        state = self.state
        state.advance()
        value = written[item.name][0]
        if item.name == "meter_time":
            clock = state.meter_time().replace(tzinfo=None)
            state.set_meter_time(
                datetime.combine(clock.date(), datetime.strptime(str(value), "%H:%M:%S").time())
            )
        elif item.name == "meter_date":
            clock = state.meter_time().replace(tzinfo=None)
            state.set_meter_time(datetime.combine(date.fromisoformat(str(value)), clock.time()))
        elif (match := _PRICE.match(item.name)) and isinstance(value, Decimal):
            state.tariff_prices[RATE_INDEX[match.group(1)]] = float(value)
        state.settings[item.name] = value
        return 0

    def _clear(self, frame: Frame) -> int:
        """Carry out a 1AH meter clear; return 0 or the error-status byte."""
        try:
            command = dlt645.clear_command(frame)
        except FrameError:
            return ERR_OTHER
        if command.password.upper() != self.model.password.upper():
            return ERR_UNAUTHORISED
        self.state.clear()
        return 0

    def _freeze(self, frame: Frame) -> int:
        """Carry out a 16H freeze: 99999999 freezes now, MMDDhhmm sets the timed freeze."""
        try:
            pattern = link.digits_from_bcd(frame.data, self.codec.PROTOCOL, "freeze time")
        except FrameError:
            return ERR_OTHER
        if pattern == FREEZE_NOW:
            self.state.freeze_now()
        else:
            self.state.settings["timed_freeze"] = pattern
        return 0

    def _relay(self, frame: Frame) -> int:
        """Carry out a 1CH command; return 0 or the error-status byte."""
        try:
            command = dlt645.relay_command(frame)
        except FrameError:
            return ERR_OTHER
        if command.password.upper() != self.model.password.upper():
            return ERR_UNAUTHORISED
        now = self.state.meter_time().replace(tzinfo=None)
        if command.valid_until < now:
            return ERR_OTHER  # the command has expired
        state = self.state
        if command.action == RelayAction.TRIP:
            if state.keep_power:
                return ERR_UNAUTHORISED
            state.set_relay(False)
        elif command.action == RelayAction.CLOSE_ALLOWED:
            state.set_relay(True)
        elif command.action in (RelayAction.ALARM, RelayAction.ALARM_RELEASE):
            state.alarm = command.action == RelayAction.ALARM
        elif command.action == RelayAction.KEEP_POWER:
            state.keep_power = True
            state.set_relay(True)
        elif command.action == RelayAction.KEEP_POWER_RELEASE:
            state.keep_power = False
        return 0

    # -- quantities -------------------------------------------------------------------
    def quantity(self, name: str, decimals: int = 2) -> Any:
        """The value of a catalogue item name for this meter now, or ``MISSING``."""
        state = self.state
        if match := _ENERGY.match(name):
            kind, rate, settlement = match.groups()
            if kind == "reverse_active":
                return _dec(0.0, decimals)
            if kind == "combined_reactive_1":
                return _dec(state.reactive, decimals) if rate == "total" else MISSING
            if settlement:
                months = sorted(state.frozen_monthly, reverse=True)
                n = int(settlement)
                if n > len(months):
                    return MISSING
                snap = state.frozen_monthly[months[n - 1]]
                return _dec(_register(snap.total, snap.rates, rate), decimals)
            return _dec(_register(state.total, state.rates, rate), decimals)
        if match := _INSTANT.match(name):
            what, rate, last = match.groups()
            n = int(last or 1)
            if n > len(state.frozen_instant):
                return MISSING
            snap = state.frozen_instant[n - 1]
            if what == "time":
                return snap.at.replace(tzinfo=None)
            return _dec(_register(snap.total, snap.rates, rate), decimals)
        if match := _PRICE.match(name):
            return _dec(state.tariff_prices.get(RATE_INDEX[match.group(1)], state.price), decimals)
        if name in state.settings or name in DEFAULT_SETTINGS:
            return state.settings.get(name, DEFAULT_SETTINGS.get(name))
        if match := _DAILY.match(name):
            what, rate, last = match.groups()
            days = sorted(state.frozen_daily, reverse=True)
            n = int(last or 1)
            if n > len(days):
                return MISSING
            day: Snapshot = state.frozen_daily[days[n - 1]]
            if what == "time":
                return day.at.replace(tzinfo=None)
            return _dec(_register(day.total, day.rates, rate or "total"), decimals)
        return self._instant(name, decimals)

    def _instant(self, name: str, decimals: int) -> Any:
        state = self.state
        inst = state.instant()
        simple: dict[str, float] = {
            "voltage_a": inst.voltage,
            "current_a": inst.current,
            "active_power_total": inst.power_kw,
            "active_power_a": inst.power_kw,
            "reactive_power_total": inst.reactive_kvar,
            "reactive_power_a": inst.reactive_kvar,
            "apparent_power_total": (inst.power_kw**2 + inst.reactive_kvar**2) ** 0.5,
            "apparent_power_a": (inst.power_kw**2 + inst.reactive_kvar**2) ** 0.5,
            "power_factor_total": inst.power_factor,
            "power_factor_a": inst.power_factor,
            "frequency": inst.frequency,
            "active_demand": inst.power_kw,
            "neutral_current": inst.current,
            "meter_temperature": 31.5,
            "clock_battery_voltage": 3.6,
        }
        if name in simple:
            return _dec(simple[name], decimals)
        if name in ("voltage_b", "voltage_c", "current_b", "current_c") or name.endswith(("_b", "_c")):
            return None  # a single-phase meter has no phases B and C: FF
        when: datetime = state.meter_time().replace(tzinfo=None)
        if name == "meter_date":
            return when.date()
        if name == "meter_time":
            return when.strftime("%H:%M:%S")
        if name == "status_word":  # DL/T 645-1997 C020: bit 6 relay open
            return f"{0 if state.relay_closed else 0x40:02X}"
        if name == "status_word_3":
            word = (0 if state.relay_closed else 0x50) | (0x200 if self.model.prepaid else 0)
            return f"{word:04X}"
        if name in ("remaining_amount", "overdraft_amount") and self.model.prepaid:
            amount = max(state.balance, 0.0) if name == "remaining_amount" else max(-state.balance, 0.0)
            return _dec(amount, decimals)
        if name == "purchase_count" and self.model.prepaid:
            return _dec(float(state.purchases), 0)
        return MISSING


def make_meter(protocol: str, state: MeterState, model: MeterModel) -> Dlt645Meter:
    """Factory used by :mod:`libs.protocols.simulator.runtime`."""
    codec = dlt645 if protocol == dlt645.PROTOCOL else importlib.import_module("libs.protocols.dlt645_1997")
    return Dlt645Meter(state, model, codec)
