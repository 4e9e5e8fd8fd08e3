"""Data identifiers (DI) of DL/T 645-2007 (4 bytes) and DL/T 645-1997 (2 bytes).

Each identifier names a quantity, its unit and its wire format: ``digits`` BCD digits sent low
byte first, ``decimals`` implied decimal places, and for ``signed`` quantities the top bit of
the most significant byte is the sign (DL/T 645-2007 appendix A: currents, powers, power
factor, combined energies). DIs are written in display order (``"00010000"``, ``"9010"``).

2007 energy identifiers are ``00 TT RR SS`` (appendix A.1): TT the energy kind, RR the tariff
rate (00 total, 01 sharp 尖, 02 peak 峰, 03 flat 平, 04 valley 谷, ``FF`` all rates as a block),
SS the settlement (00 current, 01..0C the last n monthly settlements). Blocks such as
``0001FF00`` carry the total and then as many rates as the meter has. Prepaid (00900200
remaining amount, 03330201 purchase count), daily-frozen (05060001 time, 05060101 forward
active) and variable identifiers follow the same appendix and the State Grid smart-meter
extension of it.

Meters answer ``FF`` bytes for quantities they do not have (e.g. phases B and C of a
single-phase meter); such values decode to ``None``. Values are :class:`~decimal.Decimal`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from libs.protocols.dlt645_frame import bcd_from_digits, digits_from_bcd
from libs.protocols.errors import FrameError

Value = Decimal | str | bool | None
Reading = tuple[Value, str]

__all__ = [
    "CATALOGUE_1997",
    "CATALOGUE_2007",
    "DataItem",
    "Reading",
    "Value",
    "decode_data",
    "encode_data",
    "lookup",
]


@dataclass(frozen=True)
class DataItem:
    """One data identifier: name, unit and wire format; a block lists its member items."""

    di: str
    name: str
    unit: str = ""
    digits: int = 8
    decimals: int = 2
    signed: bool = False
    kind: str = "bcd"  # bcd | date | time | ymdhm | status3 | word
    members: tuple[DataItem, ...] = ()
    variable: bool = False  # a block that may end early (energy: total + the meter's rates)
    writable: bool = False  # settable with write-data 14H (DL/T 645-2007 clause 7.3)

    @property
    def size(self) -> int:
        """Bytes of one element on the wire."""
        return self.digits // 2


RATES = {0: "total", 1: "sharp", 2: "peak", 3: "flat", 4: "valley"}
MAX_RATES = 14
MAX_STEPS = 6  # tier thresholds a DL/T 645-2007 prepaid meter keeps (阶梯值 1-6, 阶梯电价 1-7)
ENERGY_KINDS_2007 = {
    0x00: ("combined_active", "kWh", True),
    0x01: ("forward_active", "kWh", False),
    0x02: ("reverse_active", "kWh", False),
    0x03: ("combined_reactive_1", "kvarh", True),
    0x04: ("combined_reactive_2", "kvarh", True),
    0x05: ("q1_reactive", "kvarh", False),
    0x06: ("q2_reactive", "kvarh", False),
    0x07: ("q3_reactive", "kvarh", False),
    0x08: ("q4_reactive", "kvarh", False),
}
PHASES = {1: "a", 2: "b", 3: "c"}


def _rate(rate: int) -> str:
    return RATES.get(rate, f"rate{rate}")


def _last(n: int) -> str:
    return "" if n == 1 else f"_last_{n}"


def _add(table: dict[str, DataItem], *items: DataItem) -> None:
    for item in items:
        table[item.di] = item


def _energy_block(di: str, name: str, element: DataItem) -> DataItem:
    """An energy block: total then rates 1..MAX_RATES, ending where the meter's rates end."""
    members = tuple(replace(element, di=di, name=f"{name}_{_rate(r)}") for r in range(MAX_RATES + 1))
    return replace(element, di=di, name=name, members=members, variable=True)


def _phase_block(
    table: dict[str, DataItem],
    prefix: str,
    name: str,
    unit: str,
    digits: int,
    decimals: int,
    signed: bool,
    total: bool,
) -> None:
    members = []
    for code, phase in ([(0, "total")] if total else []) + list(PHASES.items()):
        item = DataItem(f"{prefix}{code:02X}00", f"{name}_{phase}", unit, digits, decimals, signed)
        members.append(item)
        _add(table, item)
    _add(table, replace(members[0], di=f"{prefix}FF00", name=name, members=tuple(members)))


def _build_2007() -> dict[str, DataItem]:
    table: dict[str, DataItem] = {}
    for kind, (kname, unit, signed) in ENERGY_KINDS_2007.items():
        for settlement in range(13):
            suffix = f"_settlement_{settlement}" if settlement else ""
            element = DataItem("", "", unit, 8, 2, signed)
            for rate in range(MAX_RATES + 1):
                di = f"00{kind:02X}{rate:02X}{settlement:02X}"
                _add(table, replace(element, di=di, name=f"{kname}_energy_{_rate(rate)}{suffix}"))
            block_di = f"00{kind:02X}FF{settlement:02X}"
            _add(table, _energy_block(block_di, f"{kname}_energy{suffix}", element))
    _phase_block(table, "0201", "voltage", "V", 4, 1, False, total=False)
    _phase_block(table, "0202", "current", "A", 6, 3, True, total=False)
    _phase_block(table, "0203", "active_power", "kW", 6, 4, True, total=True)
    _phase_block(table, "0204", "reactive_power", "kvar", 6, 4, True, total=True)
    _phase_block(table, "0205", "apparent_power", "kVA", 6, 4, True, total=True)
    _phase_block(table, "0206", "power_factor", "", 4, 3, True, total=True)
    _add(
        table,
        DataItem("02800001", "neutral_current", "A", 6, 3, True),
        DataItem("02800002", "frequency", "Hz", 4, 2),
        DataItem("02800004", "active_demand", "kW", 6, 4, True),
        DataItem("02800007", "meter_temperature", "°C", 4, 1, True),
        DataItem("02800008", "clock_battery_voltage", "V", 4, 2),
        DataItem("04000101", "meter_date", kind="date", writable=True),
        DataItem("04000102", "meter_time", digits=6, kind="time", writable=True),
        DataItem("04000503", "status_word_3", digits=4, kind="status3"),
        # Prepaid limits, appendix A.5 (参变量): XXXXXX.XX yuan.
        DataItem("04001001", "alarm_amount_1_limit", "yuan", 8, 2, writable=True),
        DataItem("04001002", "alarm_amount_2_limit", "yuan", 8, 2, writable=True),
        DataItem("04001003", "overdraft_amount_limit", "yuan", 8, 2, writable=True),
        DataItem("04001004", "hoarding_amount_limit", "yuan", 8, 2, writable=True),
        DataItem("04001005", "close_allowed_amount_limit", "yuan", 8, 2, writable=True),
        DataItem("00900100", "remaining_energy", "kWh", 8, 2),
        DataItem("00900101", "overdraft_energy", "kWh", 8, 2),
        DataItem("00900200", "remaining_amount", "yuan", 8, 2),
        DataItem("00900201", "overdraft_amount", "yuan", 8, 2),
    )
    for word in (1, 2, 4, 5, 6, 7):
        _add(table, DataItem(f"040005{word:02X}", f"status_word_{word}", digits=4, kind="word"))
    for n in range(1, 11):  # last n purchases (上n次购电)
        _add(
            table,
            DataItem(f"033301{n:02X}", f"purchase_time{_last(n)}", digits=10, kind="ymdhm"),
            DataItem(f"033302{n:02X}", f"purchase_count{_last(n)}", "", 4, 0),
            DataItem(f"033303{n:02X}", f"purchase_amount{_last(n)}", "yuan", 8, 2),
            DataItem(f"033304{n:02X}", f"amount_before_purchase{_last(n)}", "yuan", 8, 2),
            DataItem(f"033305{n:02X}", f"amount_after_purchase{_last(n)}", "yuan", 8, 2),
            DataItem(f"033306{n:02X}", f"purchased_amount_cumulative{_last(n)}", "yuan", 8, 2),
        )
    for n in range(1, MAX_STEPS + 1):  # 第一套阶梯值 n: the n-th tier threshold, XXXXXX.XX kWh
        _add(table, DataItem(f"040600{n:02X}", f"step_value_{n}", "kWh", 8, 2, writable=True))
    for n in range(1, MAX_STEPS + 2):  # 第一套阶梯电价 n: the n-th tier's price, XXXX.XXXX yuan/kWh
        _add(table, DataItem(f"040601{n:02X}", f"step_price_{n}", "yuan/kWh", 8, 4, writable=True))
    for tariff_set, suffix in ((1, ""), (2, "_set_2")):  # 第一/二套费率电价, XXXX.XXXX yuan/kWh
        price = DataItem("", "", "yuan/kWh", 8, 4, writable=True)
        for rate in range(1, MAX_RATES + 1):
            _add(
                table,
                replace(price, di=f"04050{tariff_set}{rate:02X}", name=f"tariff_price_{_rate(rate)}{suffix}"),
            )
        members = tuple(
            replace(price, di=f"04050{tariff_set}FF", name=f"tariff_price_{_rate(r)}{suffix}")
            for r in range(1, MAX_RATES + 1)
        )
        _add(
            table,
            replace(
                price,
                di=f"04050{tariff_set}FF",
                name=f"tariff_price{suffix}",
                members=members,
                variable=True,
                writable=False,
            ),
        )
    energy = DataItem("", "", "kWh", 8, 2)
    for n in range(1, 4):  # last n instantaneous freezes (上n次瞬时冻结, command 16H)
        _add(
            table,
            DataItem(f"050100{n:02X}", f"instant_frozen_time{_last(n)}", digits=10, kind="ymdhm"),
            _energy_block(f"050101{n:02X}", f"instant_frozen_forward_active_energy{_last(n)}", energy),
        )
    for n in range(1, 63):  # last n daily freezes (上n次日冻结)
        _add(
            table,
            DataItem(f"050600{n:02X}", f"daily_frozen_time{_last(n)}", digits=10, kind="ymdhm"),
            _energy_block(f"050601{n:02X}", f"daily_frozen_forward_active_energy{_last(n)}", energy),
            _energy_block(f"050602{n:02X}", f"daily_frozen_reverse_active_energy{_last(n)}", energy),
        )
    return table


def _build_1997() -> dict[str, DataItem]:
    table: dict[str, DataItem] = {}
    kinds = {
        0x901: "forward_active",
        0x902: "reverse_active",
        0x911: "forward_reactive",
        0x912: "reverse_reactive",
    }
    for kind_code, kname in kinds.items():
        unit = "kWh" if kind_code < 0x910 else "kvarh"
        # 90xx/91xx current, 94xx/95xx last month, 98xx/99xx the month before (DL/T 645-1997 table B)
        for offset, suffix in ((0x000, ""), (0x040, "_settlement_1"), (0x080, "_settlement_2")):
            base = kind_code + offset
            element = DataItem("", "", unit, 8, 2)
            for rate in range(5):
                name = f"{kname}_energy_{_rate(rate)}{suffix}"
                _add(table, replace(element, di=f"{base:03X}{rate:X}", name=name))
            block = _energy_block(f"{base:03X}F", f"{kname}_energy{suffix}", element)
            _add(table, replace(block, members=block.members[:5]))
    phases: tuple[tuple[str, str, str, int, int, bool], ...] = (
        ("B61", "voltage", "V", 4, 0, False),
        ("B62", "current", "A", 4, 2, False),
        ("B63", "active_power", "kW", 6, 4, True),
        ("B64", "reactive_power", "kvar", 4, 2, True),
        ("B65", "power_factor", "", 4, 3, True),
    )
    for prefix, name, unit, digits, decimals, total in phases:
        members = []
        for code, phase in ([(0, "total")] if total else []) + list(PHASES.items()):
            item = DataItem(f"{prefix}{code:X}", f"{name}_{phase}", unit, digits, decimals)
            members.append(item)
            _add(table, item)
        _add(table, replace(members[0], di=f"{prefix}F", name=name, members=tuple(members)))
    _add(
        table,
        DataItem("C010", "meter_date", kind="date"),
        DataItem("C011", "meter_time", digits=6, kind="time"),
        DataItem("C020", "status_word", digits=2, kind="word"),
    )
    return table


CATALOGUE_2007: dict[str, DataItem] = _build_2007()
CATALOGUE_1997: dict[str, DataItem] = _build_1997()

METER_TYPES = {0: "non-prepaid", 1: "energy-prepaid", 2: "money-prepaid", 3: "reserved"}


def _error(protocol: str, detail: str) -> FrameError:
    return FrameError(protocol, "data", detail)


def _check_size(protocol: str, di: str, expected: int, got: int) -> None:
    if expected != got:
        raise _error(protocol, f"{di} value expected {expected} bytes, got {got}")


def _block_count(protocol: str, item: DataItem, length: int) -> int:
    """How many elements a block reply carries; refuses lengths that do not fit."""
    size = item.members[0].size
    count, rest = divmod(length, size)
    fits = count == len(item.members) or (item.variable and 1 <= count <= len(item.members))
    if rest or not fits:
        want = f"1..{len(item.members)}" if item.variable else str(len(item.members))
        raise _error(protocol, f"block {item.di} expected {want} values of {size} bytes, got {length} bytes")
    return count


def _decode_element(item: DataItem, raw: bytes, protocol: str) -> list[tuple[str, Reading]]:
    if raw and all(b == 0xFF for b in raw):  # the meter does not have this quantity
        return [(item.name, (None, item.unit))]
    if item.kind in ("status3", "word"):
        word = int.from_bytes(raw, "little")
        out: list[tuple[str, Reading]] = [(item.name, (f"{word:0{2 * len(raw)}X}", ""))]
        if item.kind == "status3":  # running status word 3: relay and prepaid-type bits
            out += [
                ("relay_open", (bool(word >> 4 & 1), "")),
                ("relay_command_open", (bool(word >> 6 & 1), "")),
                ("pre_trip_alarm", (bool(word >> 7 & 1), "")),
                ("meter_type", (METER_TYPES[word >> 8 & 3], "")),
            ]
        return out
    negative = False
    if item.signed and raw[-1] & 0x80:
        negative, raw = True, raw[:-1] + bytes([raw[-1] & 0x7F])
    digits = digits_from_bcd(raw, protocol, item.name)
    if item.kind == "bcd":
        value = Decimal(digits).scaleb(-item.decimals)
        return [(item.name, (-value if negative else value, item.unit))]
    try:
        if item.kind == "date":  # YYMMDDWW, WW 0 = Sunday
            day = date(2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
            if int(digits[6:8]) > 6:
                raise ValueError(f"weekday {digits[6:8]}")
            return [(item.name, (day.isoformat(), "")), (f"{item.name}_weekday", (Decimal(digits[6:8]), ""))]
        if item.kind == "time":  # hhmmss
            moment = datetime(2000, 1, 1, int(digits[0:2]), int(digits[2:4]), int(digits[4:6]))
            return [(item.name, (moment.strftime("%H:%M:%S"), ""))]
        # ymdhm: YYMMDDhhmm
        moment = datetime(
            2000 + int(digits[0:2]), int(digits[2:4]), int(digits[4:6]), int(digits[6:8]), int(digits[8:10])
        )
        return [(item.name, (moment.strftime("%Y-%m-%d %H:%M"), ""))]
    except ValueError as exc:
        raise _error(protocol, f"{item.name}: impossible value {digits}: {exc}") from None


def _encode_element(item: DataItem, value: object, protocol: str) -> bytes:
    if value is None:
        return b"\xff" * item.size
    try:
        if item.kind in ("status3", "word"):
            word = int(value, 16) if isinstance(value, str) else int(str(value))
            return word.to_bytes(item.size, "little")
        if item.kind == "date":
            day = value if isinstance(value, date) else date.fromisoformat(str(value))
            return bcd_from_digits(day.strftime("%y%m%d") + f"{day.isoweekday() % 7:02d}", protocol)
        if item.kind == "time":
            text = value.strftime("%H:%M:%S") if isinstance(value, datetime) else str(value)
            return bcd_from_digits(datetime.strptime(text, "%H:%M:%S").strftime("%H%M%S"), protocol)
        if item.kind == "ymdhm":
            moment = value if isinstance(value, datetime) else datetime.strptime(str(value), "%Y-%m-%d %H:%M")
            return bcd_from_digits(moment.strftime("%y%m%d%H%M"), protocol)
        number = Decimal(str(value)).scaleb(item.decimals)
    except (ValueError, OverflowError, InvalidOperation) as exc:
        raise _error(protocol, f"{item.name}: cannot encode {value!r}: {exc}") from None
    if number != number.to_integral_value():
        raise _error(protocol, f"{item.name}: {value} has more than {item.decimals} decimals")
    digits = f"{abs(int(number)):0{item.digits}d}"
    limit_top = 7 if item.signed else 9
    if len(digits) > item.digits or int(digits[0]) > limit_top or (number < 0 and not item.signed):
        raise _error(protocol, f"{item.name}: {value} does not fit {item.digits} digits")
    raw = bcd_from_digits(digits, protocol)
    if number < 0:
        raw = raw[:-1] + bytes([raw[-1] | 0x80])
    return raw


def _protocol(di: str) -> str:
    return "dlt645-1997" if len(di) == 4 else "dlt645-2007"


def lookup(di: str) -> DataItem | None:
    """The catalogue entry of a display-order DI (8 hex digits: 2007, 4 hex digits: 1997)."""
    table = CATALOGUE_1997 if len(di) == 4 else CATALOGUE_2007
    return table.get(di.upper())


def decode_data(di: str, data: bytes) -> dict[str, Reading]:
    """Decode the value bytes of a read reply (DI already removed) into ``{name: (value, unit)}``.

    Unknown identifiers give ``{"raw": (hex, "")}``; malformed values raise ``FrameError``.
    """
    item = lookup(di)
    if item is None:
        return {"raw": (data.hex().upper(), "")}
    protocol = _protocol(di)
    if not item.members:
        _check_size(protocol, item.di, item.size, len(data))
        return dict(_decode_element(item, data, protocol))
    count = _block_count(protocol, item, len(data))
    out: dict[str, Reading] = {}
    for index, member in enumerate(item.members[:count]):
        out.update(_decode_element(member, data[index * member.size : (index + 1) * member.size], protocol))
    return out


def encode_data(di: str, values: object) -> bytes:
    """Encode value(s) for ``di`` as reply data (for simulated meters): a single value, a
    ``{name: value}`` mapping, or for blocks a sequence in member order (``None`` → FF fill).
    """
    item = lookup(di)
    protocol = _protocol(di)
    if item is None:
        if isinstance(values, bytes):
            return values
        raise _error(protocol, f"unknown data identifier {di}; pass raw bytes")
    if not item.members:
        value = values.get(item.name) if isinstance(values, dict) else values
        return _encode_element(item, value, protocol)
    if isinstance(values, dict):
        seq: list[object] = [values[m.name] for m in item.members if m.name in values]
    elif isinstance(values, list | tuple):
        seq = list(values)
    else:
        raise _error(protocol, f"block {di} needs a sequence or mapping of values")
    if not seq or len(seq) > len(item.members) or (not item.variable and len(seq) != len(item.members)):
        raise _error(protocol, f"block {di} takes {len(item.members)} values, got {len(seq)}")
    return b"".join(_encode_element(m, v, protocol) for m, v in zip(item.members, seq, strict=False))


def parse_value(text: str) -> Decimal | str:
    """A value typed on a command line: a Decimal when it is a number, else the text."""
    try:
        return Decimal(text)
    except ArithmeticError:
        return text
