"""A running site: buses with their meters, their TCP and pty endpoints, and the fault API.

>>> site = Site(default_site(), clock=ManualClock())   # doctest: +SKIP
>>> await site.start(host="127.0.0.1", base_port=0, pty=True)
>>> site.endpoints()          # one dict per bus: name, protocol, link, tcp, pty, alternate
>>> site.set_offline("c1-b1/000000000001", True)
>>> await site.stop()
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from libs.protocols.registry import codec

from .bus import Bus, SimMeter
from .clock import Clock, RealClock
from .faults import LinkFault
from .gateway import ModbusTcpGateway
from .profile import LoadProfile
from .site import BusConfig, MeterModel, SiteConfig
from .state import MeterState
from .transports import PtySerial, TcpPassThrough

log = logging.getLogger(__name__)

# protocol -> module holding `make_meter(state, model) -> SimMeter`
METER_MODULES: dict[str, str] = {
    "dlt645-2007": "libs.protocols.simulator.dlt645_meter",
    "dlt645-1997": "libs.protocols.simulator.dlt645_meter",
    "cjt188": "libs.protocols.simulator.cjt188_meter",
    "modbus-rtu": "libs.protocols.simulator.modbus_meter",
    "mbus": "libs.protocols.simulator.mbus_meter",
}


def make_meter(protocol: str, state: MeterState, model: MeterModel) -> SimMeter:
    """Wrap meter state in the protocol handling of ``protocol``."""
    module = importlib.import_module(METER_MODULES[protocol])
    meter: SimMeter = module.make_meter(protocol, state, model)
    return meter


class Site:
    """Every bus of a site, built from its config, with one clock shared by all meters."""

    def __init__(self, config: SiteConfig, clock: Clock | None = None, seed: int | None = None) -> None:
        self.config = config
        self.clock = clock or RealClock()
        self.profile = LoadProfile(config.shape, config.bands, config.utc_offset_hours)
        self.buses: dict[str, Bus] = {}
        self.unavailable: dict[str, str] = {}  # bus -> why it is not simulated (codec missing)
        self.tcp: dict[str, TcpPassThrough] = {}
        self.ptys: dict[str, PtySerial] = {}
        self.gateways: dict[str, ModbusTcpGateway] = {}
        self.alternates: dict[str, TcpPassThrough] = {}  # bus -> its port via the alternate
        self._alternate_of = {
            b.name: b.alternate_concentrator
            for c in config.concentrators
            for b in c.buses
            if b.alternate_concentrator
        }
        self._gateway_buses = [b.name for c in config.concentrators for b in c.buses if b.modbus_tcp]
        for conc in config.concentrators:
            for bus_cfg in conc.buses:
                try:
                    self.buses[bus_cfg.name] = self._build_bus(conc.name, bus_cfg, seed)
                except ImportError as exc:
                    self.unavailable[bus_cfg.name] = f"{bus_cfg.protocol}: {exc}"
                    log.warning("bus %s not simulated: %s", bus_cfg.name, exc)

    def _build_bus(self, concentrator: str, cfg: BusConfig, seed: int | None) -> Bus:
        bus = Bus(cfg.name, cfg.protocol, cfg.link, codec(cfg.protocol), concentrator, seed)
        for meter_cfg in cfg.meters:
            model = self.config.model(meter_cfg.model)
            state = MeterState.from_config(meter_cfg, model, self.profile, self.clock)
            state.baud = cfg.link.baud
            bus.meters.append(make_meter(cfg.protocol, state, model))
        return bus

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", base_port: int = 0, pty: bool = False) -> None:
        """Open one TCP port per bus (``base_port`` + index, or free ports if 0) and ptys."""
        for index, (name, bus) in enumerate(self.buses.items()):
            server = TcpPassThrough(bus, host, base_port + index if base_port else 0)
            await server.start()
            self.tcp[name] = server
            if pty:
                serial = PtySerial(bus)
                await serial.start()
                self.ptys[name] = serial
        # Modbus-TCP gateways after the bus ports: base_port + len(buses) + k, or free ports.
        for index, name in enumerate(n for n in self._gateway_buses if n in self.buses):
            port = base_port + len(self.buses) + index if base_port else 0
            gateway = ModbusTcpGateway(self.buses[name], host, port)
            await gateway.start()
            self.gateways[name] = gateway
        # Alternate concentrators' ports onto cascaded buses come last.
        first = base_port + len(self.buses) + len(self.gateways)
        for index, name in enumerate(n for n in self._alternate_of if n in self.buses):
            alternate = TcpPassThrough(
                self.buses[name], host, first + index if base_port else 0, via=self._alternate_of[name]
            )
            await alternate.start()
            self.alternates[name] = alternate

    async def stop(self) -> None:
        """Close every endpoint."""
        for server in self.tcp.values():
            await server.stop()
        for serial in self.ptys.values():
            await serial.stop()
        for gateway in self.gateways.values():
            await gateway.stop()
        for alternate in self.alternates.values():
            await alternate.stop()
        self.alternates.clear()
        self.tcp.clear()
        self.ptys.clear()
        self.gateways.clear()

    def endpoints(self) -> list[dict[str, Any]]:
        """One JSON-able line per bus: name, concentrator, protocol, link, TCP endpoint, pty."""
        lines: list[dict[str, Any]] = []
        for name, bus in self.buses.items():
            line: dict[str, Any] = {
                "bus": name,
                "concentrator": bus.concentrator,
                "protocol": bus.protocol,
                "link": bus.link.label(),
                "meters": [m.state.address for m in bus.meters],
            }
            if name in self.tcp:
                line.update(self.tcp[name].describe())
            if name in self.ptys:
                line.update(self.ptys[name].describe())
            if name in self.gateways:
                line.update(self.gateways[name].describe())
            if name in self.alternates:
                line["alternate"] = {
                    "concentrator": self._alternate_of[name],
                    **self.alternates[name].describe(),
                }
            lines.append(line)
        for name, why in self.unavailable.items():
            lines.append({"bus": name, "unavailable": why})
        return lines

    # -- lookup -----------------------------------------------------------------------
    def meter(self, meter_id: str) -> SimMeter:
        """A meter by ``bus/address``."""
        bus_name, _, address = meter_id.partition("/")
        return self.bus(bus_name).meter(address)

    def bus(self, name: str) -> Bus:
        """A bus by name; KeyError names the known ones."""
        try:
            return self.buses[name]
        except KeyError:
            raise KeyError(f"no bus {name!r}; known: {', '.join(self.buses)}") from None

    # -- faults -----------------------------------------------------------------------
    def set_offline(self, meter_id: str, offline: bool = True) -> None:
        """Make a meter silent (or bring it back)."""
        bus_name, _, address = meter_id.partition("/")
        bus = self.bus(bus_name)
        bus.meter(address)
        (bus.offline.add if offline else bus.offline.discard)(address)

    def set_dead(self, concentrator: str, dead: bool = True) -> None:
        """Kill (or revive) a concentrator: every one of its buses goes silent through it.

        A cascaded bus still answers through its alternate concentrator's port, unless that
        concentrator is dead too.
        """
        buses = [bus for bus in self.buses.values() if bus.concentrator == concentrator]
        cascaded = [
            self.buses[b] for b, c in self._alternate_of.items() if c == concentrator and b in self.buses
        ]
        if not buses and not cascaded:
            raise KeyError(f"no concentrator {concentrator!r}")
        for bus in buses:
            bus.dead = dead
        for bus in cascaded:
            bus.alternate_dead = dead

    def set_link_fault(self, bus_name: str, fault: LinkFault | None) -> None:
        """Manipulate (or stop manipulating) the reply bytes of a bus."""
        self.bus(bus_name).link_fault = fault

    def set_line_speed(self, bus_name: str, baud: int) -> None:
        """Set the speed the concentrator / DTU talks on a bus (after a meter changed its own)."""
        bus = self.bus(bus_name)
        bus.link = bus.link.model_copy(update={"baud": baud})

    def rollover(self, meter_id: str, value: float = 999999.9) -> None:
        """Put a meter's total register just below the rollover, so it wraps soon."""
        self.meter(meter_id).state.set_total(value)

    def replace(self, meter_id: str, new_address: str | None = None) -> None:
        """Swap a meter for a new one: registers restart, optionally under a new address."""
        bus_name, _, address = meter_id.partition("/")
        bus = self.bus(bus_name)
        if new_address is not None and any(m.state.address == new_address for m in bus.meters):
            raise ValueError(f"bus {bus_name}: address {new_address} already in use")
        bus.meter(address).state.replace(new_address)
        if new_address is not None and address in bus.offline:
            bus.offline.discard(address)

    def drift(self, meter_id: str, ppm: float | None = None, offset_s: float | None = None) -> None:
        """Make a meter's clock drift by ``ppm`` and/or jump by ``offset_s`` seconds."""
        self.meter(meter_id).state.set_drift(ppm, offset_s)
