"""Modbus-RTU driver: register maps from ``libs/protocols/models/<model>.json``.

The model's quantity names are mapped to the vocabulary in :data:`NAMES`; the registers needed
are grouped into as few read requests as possible by :func:`libs.protocols.modbus.plan_reads`.
Relay control uses the model's ``relay`` entry (coil, fc 5, or holding register, fc 6) and is
confirmed by reading the model's ``relay_state`` register back.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from libs.events.acquisition import Rate, SwitchState
from libs.protocols import modbus
from libs.protocols.drivers.base import CommandRejected, MeterRead, Request, check_names, run_plan, to_fen
from libs.protocols.modbus import MeterModel, ReadBlock, RtuFrame
from libs.protocols.transaction import Bus, Priority

# model quantity name → (vocabulary name, rate or None for instants / status)
NAMES: dict[str, tuple[str, Rate | None]] = {
    "active_energy_total": ("active_import_kwh", Rate.TOTAL),
    "import_active_energy": ("active_import_kwh", Rate.TOTAL),
    "active_energy_sharp": ("active_import_kwh", Rate.SHARP),
    "active_energy_peak": ("active_import_kwh", Rate.PEAK),
    "active_energy_flat": ("active_import_kwh", Rate.FLAT),
    "active_energy_valley": ("active_import_kwh", Rate.VALLEY),
    "export_active_energy": ("active_export_kwh", Rate.TOTAL),
    "total_active_energy": ("active_combined_kwh", Rate.TOTAL),
    "reactive_energy_total": ("reactive_import_kvarh", Rate.TOTAL),
    "import_reactive_energy": ("reactive_import_kvarh", Rate.TOTAL),
    "export_reactive_energy": ("reactive_export_kvarh", Rate.TOTAL),
    "voltage": ("voltage_a_v", None),
    "voltage_l1": ("voltage_a_v", None),
    "voltage_l2": ("voltage_b_v", None),
    "voltage_l3": ("voltage_c_v", None),
    "current": ("current_a_a", None),
    "current_l1": ("current_a_a", None),
    "current_l2": ("current_b_a", None),
    "current_l3": ("current_c_a", None),
    "active_power": ("power_kw", None),
    "active_power_total": ("power_kw", None),
    "active_power_l1": ("power_a_kw", None),
    "active_power_l2": ("power_b_kw", None),
    "active_power_l3": ("power_c_kw", None),
    "reactive_power_total": ("reactive_power_kvar", None),
    "power_factor": ("power_factor", None),
    "power_factor_total": ("power_factor", None),
    "frequency": ("frequency_hz", None),
    "remaining_amount": ("remaining_fen", None),
    "purchase_count": ("purchase_count", None),
    "relay_state": ("relay", None),
}
# units the vocabulary keeps in kilo-units
_KILO = {"W": "kW", "var": "kvar", "VA": "kVA", "Wh": "kWh", "varh": "kvarh"}


def _value(q: modbus.Quantity, value: Decimal) -> Decimal:
    return value / 1000 if q.unit in _KILO else value


class ModbusRtuDriver:
    """Reads and controls Modbus-RTU meters of one register-map model; addresses are unit ids."""

    protocol = modbus.PROTOCOL

    def __init__(self, model: str | MeterModel = "generic", max_gap: int = 0) -> None:
        self.model = model if isinstance(model, MeterModel) else modbus.load_model(model)
        self.max_gap = max_gap
        self.decode = modbus.decode_response

    @property
    def supported(self) -> list[str]:
        """Vocabulary names this model's map can read."""
        return list(dict.fromkeys(NAMES[q.name][0] for q in self.model.quantities if q.name in NAMES))

    def plan(self, address: str, quantities: Iterable[str] | None = None) -> list[Request]:
        """Read requests for the registers holding ``quantities``, grouped into blocks."""
        wanted = set(check_names(quantities, self.supported))
        missing = wanted - set(self.supported)
        if missing:
            raise ValueError(f"model {self.model.name} has no {sorted(missing)}")
        subset = MeterModel(
            self.model.name,
            self.model.description,
            tuple(q for q in self.model.quantities if q.name in NAMES and NAMES[q.name][0] in wanted),
        )
        unit = int(address)
        return [self._request(unit, block) for block in modbus.plan_reads(subset, max_gap=self.max_gap)]

    def _request(self, unit: int, block: ReadBlock) -> Request:
        def accept(frame: RtuFrame) -> bool:
            return frame.unit == unit and frame.function & 0x7F == block.function

        def fold(frame: RtuFrame, read: MeterRead) -> None:
            if frame.exception_code is not None:
                read.errors[label] = f"exception {frame.exception_code:02X}"
                return
            values = modbus.decode_values(block, frame)
            for q in block.quantities:
                name, rate = NAMES[q.name]
                value = _value(q, values[q.name])
                if rate is not None:
                    read.set_register(name, rate, value)
                elif name == "remaining_fen":
                    read.remaining_fen = to_fen(value)
                elif name == "purchase_count":
                    read.purchase_count = int(value)
                elif name == "relay":
                    read.relay = SwitchState.CLOSED if value else SwitchState.OPEN
                else:
                    read.instant[name] = value

        label = f"fc{block.function}@{block.start}+{block.count}"
        wire = modbus.encode(modbus.read_request(unit, block.function, block.start, block.count))
        return Request(label, wire, 5 + 2 * block.count, accept, fold)

    async def relay_state(self, bus: Bus, address: str, priority: Priority = Priority.COMMAND) -> SwitchState:
        """Read the relay position back from the model's ``relay_state`` register."""
        read = await run_plan(bus, self.plan(address, ["relay"]), priority)
        return read.relay or SwitchState.UNKNOWN

    async def relay(self, bus: Bus, address: str, close: bool) -> RtuFrame:
        """Close (power on) or trip the relay per the model; returns the echoed write."""
        unit = int(address)
        request = modbus.relay_command(self.model, unit, close)
        reply: RtuFrame = await bus.transact(
            modbus.encode(request),
            reply_size=8,
            accept=lambda f: f.unit == unit and f.function & 0x7F == request.function,
            priority=Priority.COMMAND,
        )
        if reply.exception_code is not None:
            raise CommandRejected(f"relay unit {unit}", f"exception {reply.exception_code:02X}", reply)
        return reply


def modbus_rtu(**model: Any) -> ModbusRtuDriver:
    """A Modbus-RTU driver (``model`` = register map name)."""
    return ModbusRtuDriver(**model)
