"""DL/T 645-2007 and -1997 drivers: block reads, relay control, parameter writes and meter clear
(2007), broadcast time sync.

Quantities map to data identifiers in one table per edition. Energy is read as a block
(2007 ``0001FF00``, 1997 ``901F``: total + the meter's rates in one transaction), phase values
as phase blocks (``0201FF00`` = voltage A, B, C). The meter clock takes two reads (date, time);
the relay state comes from running status word 3 (2007 ``04000503`` bit 4) or the 1997 status
word ``C020`` (bit 6). Meters answer an abnormal reply for identifiers they lack; those land in
``MeterRead.errors`` instead of failing the read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from types import ModuleType
from typing import Any

from libs.events.acquisition import Rate, SwitchState
from libs.protocols import catalogue, dlt645
from libs.protocols import dlt645_1997 as dlt645_97
from libs.protocols import dlt645_frame as link
from libs.protocols.drivers.base import (
    RATE_ORDER,
    CommandRejected,
    MeterRead,
    Request,
    check_names,
    run_plan,
    to_fen,
)
from libs.protocols.errors import FrameError
from libs.protocols.transaction import Bus, Priority

CHINA = timezone(timedelta(hours=8))
# Platform parameters (control's parameter download, C8) → DL/T 645-2007 data items (appendix A):
# prices are fen per unit on the platform and XXXX.XXXX yuan on the meter (第一套费率电价, rate 1
# for a single price); alarm limits fen → XXXXXX.XX yuan (报警金额1/2限值).
PARAMETER_ITEMS: dict[str, tuple[str, Decimal]] = {
    "price.total": ("04050101", Decimal("0.0001")),
    "price.sharp": ("04050101", Decimal("0.0001")),
    "price.peak": ("04050102", Decimal("0.0001")),
    "price.flat": ("04050103", Decimal("0.0001")),
    "price.valley": ("04050104", Decimal("0.0001")),
    "alarm1_fen": ("04001001", Decimal("0.01")),
    "alarm2_fen": ("04001002", Decimal("0.01")),
}
_TIER = re.compile(r"^tier\.(\d+)\.(up_to|price|surcharge)$")
FEN = Decimal(100)  # platform amounts are fen; the meter keeps yuan
PREAMBLE = 4  # FE bytes meters put before replies, counted in the expected reply size
_RATE_NAMES = {
    Rate.TOTAL: "total",
    Rate.SHARP: "sharp",
    Rate.PEAK: "peak",
    Rate.FLAT: "flat",
    Rate.VALLEY: "valley",
}


@dataclass(frozen=True)
class Edition:
    """One edition's tables: vocabulary name → (DI, catalogue name or block prefix)."""

    codec: ModuleType
    registers: dict[str, tuple[str, str]]  # register → (energy block DI, catalogue prefix)
    instant: dict[str, tuple[str, str]]  # instant → (DI, catalogue name)
    status: dict[str, tuple[str, ...]]  # status → DIs
    max_rates: int  # elements of an energy block (total + rates)


EDITION_2007 = Edition(
    dlt645,
    registers={
        "active_import_kwh": ("0001FF00", "forward_active_energy"),
        "active_export_kwh": ("0002FF00", "reverse_active_energy"),
        "active_combined_kwh": ("0000FF00", "combined_active_energy"),
        "reactive_import_kvarh": ("0003FF00", "combined_reactive_1_energy"),
        "reactive_export_kvarh": ("0004FF00", "combined_reactive_2_energy"),
    },
    instant={
        "voltage_a_v": ("0201FF00", "voltage_a"),
        "voltage_b_v": ("0201FF00", "voltage_b"),
        "voltage_c_v": ("0201FF00", "voltage_c"),
        "current_a_a": ("0202FF00", "current_a"),
        "current_b_a": ("0202FF00", "current_b"),
        "current_c_a": ("0202FF00", "current_c"),
        "power_kw": ("0203FF00", "active_power_total"),
        "power_a_kw": ("0203FF00", "active_power_a"),
        "power_b_kw": ("0203FF00", "active_power_b"),
        "power_c_kw": ("0203FF00", "active_power_c"),
        "reactive_power_kvar": ("02040000", "reactive_power_total"),
        "power_factor": ("02060000", "power_factor_total"),
        "frequency_hz": ("02800002", "frequency"),
    },
    status={
        "meter_time": ("04000101", "04000102"),
        "relay": ("04000503",),
        "remaining_fen": ("00900200",),
        "purchase_count": ("03330201",),
    },
    max_rates=5,
)

EDITION_1997 = Edition(
    dlt645_97,
    registers={
        "active_import_kwh": ("901F", "forward_active_energy"),
        "active_export_kwh": ("902F", "reverse_active_energy"),
        "reactive_import_kvarh": ("911F", "forward_reactive_energy"),
        "reactive_export_kvarh": ("912F", "reverse_reactive_energy"),
    },
    instant={
        "voltage_a_v": ("B61F", "voltage_a"),
        "voltage_b_v": ("B61F", "voltage_b"),
        "voltage_c_v": ("B61F", "voltage_c"),
        "current_a_a": ("B62F", "current_a"),
        "current_b_a": ("B62F", "current_b"),
        "current_c_a": ("B62F", "current_c"),
        "power_kw": ("B63F", "active_power_total"),
        "power_a_kw": ("B63F", "active_power_a"),
        "power_b_kw": ("B63F", "active_power_b"),
        "power_c_kw": ("B63F", "active_power_c"),
        "reactive_power_kvar": ("B64F", "reactive_power_total"),
        "power_factor": ("B65F", "power_factor_total"),
    },
    status={"meter_time": ("C010", "C011"), "relay": ("C020",)},
    max_rates=5,
)


class Dlt645Driver:
    """Reads (and, for 2007, controls) DL/T 645 meters of one model.

    ``password`` (PA P0 P1 P2, wire order) and ``operator`` are the model's control codes;
    ``tz`` is the zone of the meters' clocks (China Standard Time by default).
    """

    def __init__(
        self,
        edition: Edition = EDITION_2007,
        password: str = "02000000",
        operator: str = "00000000",
        tz: tzinfo = CHINA,
    ) -> None:
        self.edition = edition
        self.codec = edition.codec
        self.protocol: str = edition.codec.PROTOCOL
        self.decode = edition.codec.decode
        self.password = password
        self.operator = operator
        self.tz = tz

    @property
    def supported(self) -> list[str]:
        """Vocabulary names this edition can read."""
        e = self.edition
        return [*e.registers, *e.instant, *e.status]

    # -- reading ------------------------------------------------------------------------
    def plan(self, address: str, quantities: Iterable[str] | None = None) -> list[Request]:
        """One request per data identifier needed, energy and phase values as blocks."""
        e = self.edition
        wanted = check_names(quantities, self.supported)
        missing = [q for q in wanted if q not in self.supported]
        if missing:
            raise ValueError(f"{self.protocol} cannot read {missing}")
        by_di: dict[str, dict[str, tuple[str, Any]]] = {}  # DI → catalogue name → (target, rate)
        for q in wanted:
            if q in e.registers:
                di, prefix = e.registers[q]
                for rate in RATE_ORDER[: e.max_rates]:
                    by_di.setdefault(di, {})[f"{prefix}_{_RATE_NAMES[rate]}"] = (q, rate)
            elif q in e.instant:
                di, name = e.instant[q]
                by_di.setdefault(di, {})[name] = (q, None)
            else:
                for di in e.status[q]:
                    by_di.setdefault(di, {})
        clock: dict[str, Any] = {}
        return [self._read_request(address, di, names, clock) for di, names in by_di.items()]

    def _read_request(
        self, address: str, di: str, names: dict[str, tuple[str, Any]], clock: dict[str, Any]
    ) -> Request:
        addr = address.zfill(12)
        item = catalogue.lookup(di)
        size = 0
        if item is not None:
            members = item.members[: self.edition.max_rates] if item.variable else item.members
            size = sum(m.size for m in members) if members else item.size
        read_fn = self.codec.Function.READ

        def accept(frame: Any) -> bool:
            return bool(
                frame.reply
                and frame.address == addr
                and frame.function == read_fn
                and (frame.error or frame.di == di)
            )

        def fold(frame: Any, read: MeterRead) -> None:
            if frame.error:
                read.errors[di] = ",".join(link.error_names(frame.error_code, self.codec.ERRORS))
                return
            self._fold(self.codec.values(frame), names, clock, read)

        wire = self.codec.encode(self.codec.read(addr, di))
        return Request(di, wire, PREAMBLE + 12 + len(di) // 2 + size, accept, fold)

    def _fold(
        self,
        values: dict[str, catalogue.Reading],
        names: dict[str, tuple[str, Any]],
        clock: dict[str, Any],
        read: MeterRead,
    ) -> None:
        for name, (value, _unit) in values.items():
            if value is None:
                continue  # FF: the meter lacks it (phases B, C of a single-phase meter)
            if name in names:
                target, rate = names[name]
                assert isinstance(value, Decimal)
                if rate is None:
                    read.instant[target] = value
                else:
                    read.set_register(target, rate, value)
            elif name == "meter_date":
                clock["date"] = date.fromisoformat(str(value))
            elif name == "meter_time":
                clock["time"] = time.fromisoformat(str(value))
            elif name == "relay_open":
                read.relay = SwitchState.OPEN if value else SwitchState.CLOSED
            elif name == "status_word" and self.edition is EDITION_1997:
                read.relay = SwitchState.OPEN if int(str(value), 16) & 0x40 else SwitchState.CLOSED
            elif name == "remaining_amount":
                assert isinstance(value, Decimal)
                read.remaining_fen = to_fen(value)
            elif name == "purchase_count":
                assert isinstance(value, Decimal)
                read.purchase_count = int(value)
        if "date" in clock and "time" in clock:
            read.meter_time = datetime.combine(clock["date"], clock["time"], self.tz)

    # -- commands -----------------------------------------------------------------------
    async def meter_time(self, bus: Bus, address: str, priority: Priority = Priority.ON_DEMAND) -> datetime:
        """The meter's clock (aware, in ``tz``)."""
        read = await run_plan(bus, self.plan(address, ["meter_time"]), priority)
        if read.meter_time is None:
            raise CommandRejected("meter time", f"meter refused: {read.errors}", None)
        return read.meter_time

    async def relay_state(self, bus: Bus, address: str, priority: Priority = Priority.COMMAND) -> SwitchState:
        """Read the relay position back (OPEN = tripped, no power)."""
        read = await run_plan(bus, self.plan(address, ["relay"]), priority)
        return read.relay or SwitchState.UNKNOWN

    async def relay(
        self,
        bus: Bus,
        address: str,
        close: bool,
        *,
        valid_until: datetime | None = None,
        validity: timedelta = timedelta(minutes=5),
    ) -> dlt645.Frame:
        """Trip (``close=False``, N1 = 1AH) or allow closing (1BH) the relay: command 1CH.

        The command expires at ``valid_until`` (meter local time); by default the meter's own
        clock is read first and ``validity`` added, so a skewed meter clock does not refuse it.
        Returns the 9CH acknowledgement; CommandRejected carries an abnormal reply (DCH).
        """
        if self.edition is not EDITION_2007:
            raise NotImplementedError("DL/T 645-1997 has no relay control command")
        if valid_until is None:
            valid_until = await self.meter_time(bus, address, Priority.COMMAND) + validity
        action = dlt645.RelayAction.CLOSE_ALLOWED if close else dlt645.RelayAction.TRIP
        addr = address.zfill(12)
        request = dlt645.relay_control(
            addr, action, valid_until.replace(tzinfo=None), self.password, self.operator
        )
        ack: dlt645.Frame = await bus.transact(
            dlt645.encode(request),
            reply_size=PREAMBLE + 13,
            accept=lambda f: bool(f.reply and f.address == addr and f.function == dlt645.Function.RELAY),
            priority=Priority.COMMAND,
        )
        if ack.error:
            names = link.error_names(ack.error_code or 0, dlt645.ERRORS)
            raise CommandRejected(f"relay {action.name.lower()} {addr}", ",".join(names), ack)
        return ack

    async def clear(self, bus: Bus, address: str, operator: str | None = None) -> dlt645.Frame:
        """Meter clear 1AH (电表清零) with the model's password; ``operator`` (8 hex digits, C3..C0)
        defaults to the model's operator code. Returns the 9AH acknowledgement; CommandRejected
        carries an abnormal reply (DAH), ValueError an operator code that is not 8 hex digits.

        The meter zeroes its energy registers, demand, freezes and event records: read the
        registers before (they are gone after) and again after, to confirm.
        """
        if self.edition is not EDITION_2007:
            raise NotImplementedError("DL/T 645-1997 meter clear is not supported")
        addr = address.zfill(12)
        try:
            request = dlt645.meter_clear(addr, self.password, operator or self.operator)
        except FrameError as exc:
            raise ValueError(str(exc)) from None
        ack: dlt645.Frame = await bus.transact(
            dlt645.encode(request),
            reply_size=PREAMBLE + 13,  # 9AH without data; DAH with its error byte
            accept=lambda f: bool(
                f.reply and f.address == addr and f.function == dlt645.Function.METER_CLEAR
            ),
            priority=Priority.COMMAND,
        )
        if ack.error:
            names = link.error_names(ack.error_code or 0, dlt645.ERRORS)
            raise CommandRejected(f"meter clear {addr}", ",".join(names), ack)
        return ack

    async def write_parameters(self, bus: Bus, address: str, params: dict[str, str]) -> dict[str, Decimal]:
        """Write platform parameters (``PARAMETER_ITEMS`` keys, values in fen) with 14H, then
        read each back. Returns DI → value written (yuan). ValueError for a key this edition
        cannot hold (see :func:`parameter_item`: e.g. a seventh tier threshold); CommandRejected when the meter refuses a write or a
        value reads back different.
        """
        if self.edition is not EDITION_2007:
            raise NotImplementedError("DL/T 645-1997 parameter download is not supported")
        wanted = {k: v for k, v in params.items() if not (_TIER.match(k) and k.endswith(".up_to") and not v)}
        items = {key: parameter_item(key) for key in wanted}  # the last tier's open threshold: none
        unknown = sorted(key for key, item in items.items() if item is None)
        if unknown:
            raise ValueError(f"DL/T 645-2007 meters cannot hold {unknown}")
        values: dict[str, Decimal] = {}
        for key, text in sorted(wanted.items()):
            item = items[key]
            assert item is not None
            di, step, scale = item
            try:
                values[di] = (Decimal(text) / scale).quantize(step, rounding=ROUND_HALF_UP)
            except ArithmeticError:  # decimal.InvalidOperation: not a number
                raise ValueError(f"{key}={text!r} is not a number") from None
        values = dict(sorted(values.items()))  # written and reported in data-identifier order
        addr = address.zfill(12)
        write_fn = dlt645.Function.WRITE
        for di, value in values.items():
            request = dlt645.write(addr, di, catalogue.encode_data(di, value), self.password, self.operator)
            ack: dlt645.Frame = await bus.transact(
                dlt645.encode(request),
                reply_size=PREAMBLE + 12,
                accept=lambda f: bool(f.reply and f.address == addr and f.function == write_fn),
                priority=Priority.COMMAND,
            )
            if ack.error:
                names = link.error_names(ack.error_code or 0, dlt645.ERRORS)
                raise CommandRejected(f"write {di} to {addr}", ",".join(names), ack)
        for di, value in values.items():
            request = dlt645.read(addr, di)
            reply: dlt645.Frame = await bus.transact(
                dlt645.encode(request),
                reply_size=PREAMBLE + 16 + catalogue.lookup(di).size,  # type: ignore[union-attr]
                accept=lambda f: bool(f.reply and f.address == addr and f.function == dlt645.Function.READ),
                priority=Priority.COMMAND,
            )
            read = None if reply.error else next(iter(dlt645.values(reply).values()))[0]
            if read != value:
                raise CommandRejected(f"write {di} to {addr}", f"reads back {read}, wrote {value}", reply)
        return values

    async def sync_time(self, bus: Bus, when: datetime) -> None:
        """Broadcast time synchronisation 08H (no reply); ``when`` is converted to ``tz``."""
        if when.tzinfo is not None:
            when = when.astimezone(self.tz).replace(tzinfo=None)
        frame = self.codec.broadcast_time(when)
        await bus.transact(self.codec.encode(frame), expect_reply=False, priority=Priority.COMMAND)


def parameter_item(key: str) -> tuple[str, Decimal, Decimal] | None:
    """Where a platform parameter goes on a DL/T 645-2007 meter: (DI, step, divisor from the
    platform's unit), or None when the meter cannot hold it.

    Prices and alarm limits (``PARAMETER_ITEMS``, fen → yuan). Tier tables of a tiered tariff
    (control's ``tier.<n>.up_to`` / ``tier.<n>.price`` / ``tier.<n>.surcharge``) go to the first
    set of 阶梯值 n (04060001 + n - 1, kWh) and 阶梯电价 n (04060101 + n - 1, yuan/kWh): such meters
    deduct the rate price plus the tier's price, which is the platform's rule for a surcharge on
    a base tariff, and for absolute tier prices (no base prices downloaded) the tier's price
    alone. The last tier's open threshold ("") is not written; tiers beyond the meter's
    ``MAX_STEPS`` thresholds cannot be held. When the tiers reset (month or year) is the
    meter's own settlement setting, not downloaded."""
    if key in PARAMETER_ITEMS:
        di, step = PARAMETER_ITEMS[key]
        return di, step, FEN
    match = _TIER.match(key)
    if match is None:
        return None
    n, what = int(match.group(1)), match.group(2)
    if what == "up_to":
        return (f"040600{n:02X}", Decimal("0.01"), Decimal(1)) if 1 <= n <= catalogue.MAX_STEPS else None
    return (f"040601{n:02X}", Decimal("0.0001"), FEN) if 1 <= n <= catalogue.MAX_STEPS + 1 else None


def dlt645_2007(**model: Any) -> Dlt645Driver:
    """A DL/T 645-2007 driver (``password``, ``operator``, ``tz`` per model)."""
    return Dlt645Driver(EDITION_2007, **model)


def dlt645_1997(**model: Any) -> Dlt645Driver:
    """A DL/T 645-1997 driver (reads and time sync only)."""
    return Dlt645Driver(EDITION_1997, **model)
