"""EN 13757 wired M-Bus driver: REQ_UD2 to a primary address, RSP_UD records folded.

One REQ_UD2 (EN 13757-2 clause 5.4) returns every record of the meter, so the plan is one
request whatever is asked. Records of storage 0 (current values) are mapped by their VIF name
and the medium of the fixed header: energy → ``heat_kwh`` for heat/cooling meters, else
``active_import_kwh``; volume → ``volume_m3``; volume_flow → ``flow_m3h``; power → ``power_kw``;
date_time → ``meter_time``. Tariff 1..4 records land on the rates in DL/T 645 order
(sharp, peak, flat, valley) — an assumption: EN 13757-3 leaves tariff meaning to the meter.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from libs.protocols import mbus
from libs.protocols.drivers.base import RATE_ORDER, MeterRead, Request, check_names
from libs.protocols.drivers.dlt645 import CHINA
from libs.protocols.mbus import MBusFrame

HEAT_MEDIA = {0x04, 0x0A, 0x0B, 0x0C, 0x0D}
_UNIT_SCALE = {"Wh": Decimal("0.001"), "J": Decimal(1) / 3_600_000, "W": Decimal("0.001")}


class MBusDriver:
    """Reads M-Bus meters by primary address (``"1"`` .. ``"250"``)."""

    protocol = mbus.PROTOCOL
    supported: tuple[str, ...] = (
        "active_import_kwh",
        "heat_kwh",
        "volume_m3",
        "flow_m3h",
        "power_kw",
        "meter_time",
    )

    def __init__(self, tz: tzinfo = CHINA) -> None:
        self.tz = tz
        self.decode = mbus.decode
        self._fcb: dict[int, bool] = {}

    def plan(self, address: str, quantities: Iterable[str] | None = None) -> list[Request]:
        """One REQ_UD2; the frame count bit alternates per address (clause 5.5)."""
        check_names(quantities, self.supported)
        primary = int(address)
        fcb = self._fcb[primary] = not self._fcb.get(primary, True)
        wire = mbus.encode(mbus.request_ud2(primary, fcb))

        def accept(frame: MBusFrame) -> bool:
            return frame.kind == "long" and frame.address == primary and not frame.control & 0x40

        return [Request("REQ_UD2", wire, 255, accept, self._fold)]

    def _fold(self, frame: MBusFrame, read: MeterRead) -> None:
        heat = frame.header is not None and frame.header.medium in HEAT_MEDIA
        for record in frame.records:
            if record.storage or record.function != "instantaneous" or record.subunit:
                continue
            value = record.value
            if record.name == "date_time" and isinstance(value, str):
                read.meter_time = datetime.fromisoformat(value).replace(tzinfo=self.tz)
                continue
            if not isinstance(value, Decimal | int):
                continue
            amount = Decimal(value) * _UNIT_SCALE.get(record.unit or "", Decimal(1))
            rate = RATE_ORDER[record.tariff] if record.tariff < len(RATE_ORDER) else None
            if record.name == "energy" and rate is not None:
                read.set_register("heat_kwh" if heat else "active_import_kwh", rate, amount)
            elif record.name == "volume" and rate is not None:
                read.set_register("volume_m3", rate, amount)
            elif record.name == "volume_flow" and record.unit == "m3/h":
                read.instant["flow_m3h"] = amount
            elif record.name == "power":
                read.instant["power_kw"] = amount


def mbus_driver(**model: Any) -> MBusDriver:
    """An M-Bus driver."""
    return MBusDriver(**model)
