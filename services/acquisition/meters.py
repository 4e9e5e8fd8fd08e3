"""From a registry meter to what the bus engine needs: its driver, what to read, frozen reads.

Drivers come from :func:`libs.protocols.drivers.driver_for`, configured per meter: DL/T 645
meters with their control password and operator code, Modbus meters with their register map
(the registry's ``model`` is the map name), CJ/T 188 meters with the meter type of their medium
and the data-identifier order of their model (models named ``*-rev`` / ``*-swapped`` send the
DI high byte first).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from libs.events.acquisition import Medium
from libs.protocols import dlt645
from libs.protocols.drivers import MeterRead, driver_for
from libs.protocols.drivers.base import RATE_ORDER
from libs.protocols.drivers.dlt645 import PREAMBLE, Dlt645Driver
from libs.protocols.transaction import Bus as TxBus
from libs.protocols.transaction import Priority
from services.acquisition.registry import Meter

log = logging.getLogger(__name__)

_CJT188_TYPES = {Medium.WATER: 0x10, Medium.HOT_WATER: 0x11, Medium.HEAT: 0x20, Medium.GAS: 0x30}
# registry quantity names that the driver vocabulary spells differently
_VOCABULARY = {"remaining_amount": "remaining_fen"}


def make_driver(meter: Meter) -> Any:
    """The protocol driver for one meter, with its model options and control codes."""
    options: dict[str, Any] = {}
    if meter.protocol.startswith("dlt645"):
        if meter.password is not None:
            options["password"] = meter.password.get_secret_value()
        if meter.operator_code is not None:
            options["operator"] = meter.operator_code.get_secret_value()
    elif meter.protocol == "modbus-rtu":
        options["model"] = meter.model
    elif meter.protocol == "cjt188":
        options["meter_type"] = _CJT188_TYPES.get(meter.medium, 0x10)
        options["di_order"] = "swapped" if meter.model.endswith(("-rev", "-swapped")) else "standard"
    return driver_for(meter.protocol, **options)


def read_quantities(meter: Meter, driver: Any) -> list[str]:
    """The meter's configured quantities that its driver can read (the rest is logged once)."""
    wanted = [_VOCABULARY.get(q, q) for q in meter.quantities]
    supported = set(driver.supported)
    unreadable = [q for q in wanted if q not in supported]
    if unreadable:
        log.warning("meter %s (%s) cannot read %s; skipped", meter.id, meter.model, ", ".join(unreadable))
    return [q for q in wanted if q in supported]


# DL/T 645-2007 frozen data (A5): last daily freeze (05060001 time, 05060101 forward active
# energy block) and last settlement day (0001FF01: forward active energy block, 1st past month).
_DAILY = ("05060001", "05060101")
_MONTHLY = ("0001FF01",)


async def read_frozen(
    bus: TxBus, driver: Any, address: str, monthly: bool, priority: Priority = Priority.ROUTINE
) -> tuple[MeterRead, str] | None:
    """A meter-side frozen read and its label (``daily:YYYY-MM-DD`` / ``monthly:YYYY-MM``).

    None when the protocol keeps no frozen data we can read (only DL/T 645-2007 here).
    """
    if not isinstance(driver, Dlt645Driver) or driver.protocol != "dlt645-2007":
        return None
    addr = address.zfill(12)
    read = MeterRead()
    values: dict[str, Any] = {}
    for di in _MONTHLY if monthly else _DAILY:

        def accept(f: Any, di: str = di) -> bool:
            return bool(f.reply and f.address == addr and (f.error or f.di == di))

        frame = await bus.transact(
            dlt645.encode(dlt645.read(addr, di)),
            reply_size=PREAMBLE + 16 + 20,
            accept=accept,
            priority=priority,
        )
        if frame.error:
            read.errors[di] = "refused"
            continue
        values.update(dlt645.values(frame))
    for name, (value, _unit) in values.items():
        rate = next((r for r in RATE_ORDER if name.endswith(f"_{r.value}")), None)
        if rate is not None and "forward_active_energy" in name and isinstance(value, Decimal):
            read.set_register("active_import_kwh", rate, value)
    if monthly:
        today = date.today().replace(day=1) - timedelta(days=1)
        return read, f"monthly:{today:%Y-%m}"
    stamp = next((v for n, (v, _) in values.items() if n.startswith("daily_frozen_time")), None)
    day = datetime.fromisoformat(str(stamp)).date() if stamp else date.today()
    return read, f"daily:{day.isoformat()}"


async def relay_action(bus: TxBus, driver: Dlt645Driver, address: str, action: dlt645.RelayAction) -> Any:
    """DL/T 645-2007 relay control 1CH with any N1 (keep power, alarm), valid 5 min by the meter clock."""
    addr = address.zfill(12)
    valid_until = await driver.meter_time(bus, addr, Priority.COMMAND) + timedelta(minutes=5)
    request = dlt645.relay_control(
        addr, action, valid_until.replace(tzinfo=None), driver.password, driver.operator
    )
    ack = await bus.transact(
        dlt645.encode(request),
        reply_size=PREAMBLE + 13,
        accept=lambda f: bool(f.reply and f.address == addr and f.function == dlt645.Function.RELAY),
        priority=Priority.COMMAND,
    )
    return ack
