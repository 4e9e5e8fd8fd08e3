"""Protocol drivers: plan reads, fold replies into :class:`MeterRead`, issue commands.

>>> driver = driver_for("dlt645-2007", password="00123456")        # doctest: +SKIP
>>> bus = Bus(TcpTransport(host, port, line), driver.decode)          # doctest: +SKIP
>>> read = await read_meter(bus, driver, "000000000001", ["active_import_kwh", "voltage_a_v"])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libs.protocols.drivers.base import (
    CommandRejected,
    Driver,
    MeterRead,
    Request,
    read_meter,
    run_plan,
)
from libs.protocols.drivers.cjt188 import Cjt188Driver, cjt188_driver
from libs.protocols.drivers.dlt645 import Dlt645Driver, dlt645_1997, dlt645_2007
from libs.protocols.drivers.mbus import MBusDriver, mbus_driver
from libs.protocols.drivers.modbus_rtu import ModbusRtuDriver, modbus_rtu

DRIVERS: dict[str, Callable[..., Any]] = {
    "dlt645-2007": dlt645_2007,
    "dlt645-1997": dlt645_1997,
    "modbus-rtu": modbus_rtu,
    "cjt188": cjt188_driver,
    "mbus": mbus_driver,
}


def driver_for(protocol: str, **model: Any) -> Any:
    """A driver for ``protocol`` configured with the model's options; KeyError names the known ones.

    Options: DL/T 645 ``password``, ``operator``, ``tz``; Modbus ``model`` (register map name);
    CJ/T 188 ``meter_type``, ``di_order``; M-Bus ``tz``.
    """
    try:
        factory = DRIVERS[protocol]
    except KeyError:
        raise KeyError(f"no driver for {protocol!r}; known: {', '.join(DRIVERS)}") from None
    return factory(**model)


__all__ = [
    "DRIVERS",
    "Cjt188Driver",
    "CommandRejected",
    "Dlt645Driver",
    "Driver",
    "MBusDriver",
    "MeterRead",
    "ModbusRtuDriver",
    "Request",
    "driver_for",
    "read_meter",
    "run_plan",
]
