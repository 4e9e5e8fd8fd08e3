"""A Modbus-RTU meter whose registers follow a model file of ``libs/protocols/models/``.

Requests are decoded (``decode_request``) and replies built by :mod:`libs.protocols.modbus`;
the model's register map decides what each register holds (scale, type, word order). Reads
outside the map get exception 02 as from real meters; unit 0 is the broadcast address (writes
act, nobody answers); the relay follows the model's ``relay`` entry (coil or register).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from libs.protocols import modbus
from libs.protocols.modbus import RtuFrame

from .site import MeterModel
from .state import MeterState

ILLEGAL_FUNCTION = 1
ILLEGAL_VALUE = 3


def _dec(value: float, places: str = "0.001") -> Decimal:
    return Decimal(repr(float(value))).quantize(Decimal(places), rounding=ROUND_DOWN)


class ModbusMeter:
    """One Modbus-RTU meter on a bus."""

    def __init__(self, state: MeterState, model: MeterModel) -> None:
        if model.modbus_map is None:
            raise ValueError("a Modbus-RTU meter model needs modbus_map")
        self.state = state
        self.model = model
        self.map = modbus.load_model(model.modbus_map)

    @property
    def unit(self) -> int:
        """The slave address (unit id) of this meter."""
        return int(self.state.address)

    def handle(self, frame: RtuFrame) -> bytes | None:
        """Answer a request for this unit; act silently on a broadcast (unit 0)."""
        if frame.reply or frame.unit not in (0, self.unit):
            return None
        self.state.advance()
        reply = self._act(frame)
        if frame.unit == 0 or reply is None:
            return None
        return modbus.encode(reply)

    def _act(self, frame: RtuFrame) -> RtuFrame | None:
        fc = frame.function
        if fc in (3, 4):
            return modbus.simulate_response(self.map, frame, self.values())
        relay = self.map.relay
        if relay and fc == relay["function"] == 5 and frame.address == relay["register"]:
            self.state.set_relay(bool(frame.bits and frame.bits[0]))
            return modbus.relay_echo(frame)
        if relay and fc == relay["function"] == 6 and frame.address == relay["register"]:
            value = frame.registers[0] if frame.registers else None
            if value not in (relay.get("close_value"), relay.get("open_value")):
                return modbus.exception_response(frame.unit, fc, ILLEGAL_VALUE)
            self.state.set_relay(value == relay.get("close_value"))
            return modbus.relay_echo(frame)
        return modbus.exception_response(frame.unit, fc, ILLEGAL_FUNCTION)

    def values(self) -> dict[str, Decimal]:
        """Every quantity of the register map, from the meter state now."""
        state = self.state
        inst = state.instant()
        # Three-phase models share the load evenly over L1..L3 (phase current = P/3 / V / PF).
        phase_kw, phase_kvar = inst.power_kw / 3, inst.reactive_kvar / 3
        phase_a = phase_kw * 1000 / (inst.voltage * inst.power_factor) if phase_kw else 0.0
        out: dict[str, float] = {
            "active_energy_total": state.total,
            "import_active_energy": state.total,
            "total_active_energy": state.total,
            **{f"active_energy_{rate}": kwh for rate, kwh in state.rates.items()},
            "reactive_energy_total": state.reactive,
            "voltage": inst.voltage,
            "current": inst.current,
            "frequency": inst.frequency,
            "active_power": inst.power_kw,
            "reactive_power": inst.reactive_kvar,
            "active_power_total": inst.power_kw,
            "reactive_power_total": inst.reactive_kvar,
            "power_factor": inst.power_factor,
            "power_factor_total": inst.power_factor,
            "remaining_amount": state.balance,
            "purchase_count": state.purchases,
            "relay_state": 1 if state.relay_closed else 0,
        }
        for phase in ("l1", "l2", "l3"):
            out |= {
                f"voltage_{phase}": inst.voltage,
                f"current_{phase}": phase_a,
                f"active_power_{phase}": phase_kw,
                f"reactive_power_{phase}": phase_kvar,
                f"power_factor_{phase}": inst.power_factor,
            }
        values: dict[str, Decimal] = {}
        for q in self.map.quantities:
            if q.name not in out:
                continue
            raw = out[q.name]
            if q.unit in ("W", "var", "VA"):
                raw *= 1000  # state keeps kW / kvar
            money_or_energy = q.name.startswith(("active_energy", "reactive_energy", "remaining"))
            places = "0.01" if money_or_energy else "0.001"
            values[q.name] = _dec(raw, places)
        return values


def make_meter(protocol: str, state: MeterState, model: MeterModel) -> ModbusMeter:
    """Factory used by :mod:`libs.protocols.simulator.runtime`."""
    return ModbusMeter(state, model)
