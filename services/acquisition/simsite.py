"""A registry for a running simulator (``MF_ACQ_SIMULATOR``): the dev stack's topology.

``meterflow simulate`` prints one JSON line per bus (``bus``, ``concentrator``, ``protocol``,
``link``, ``meters``, ``tcp``, optionally ``pty`` and ``alternate``). Those lines say where each
bus is; the site configuration (``default_site()`` unless given) says what each meter is (model,
kind). Meter ids are ``<bus>/<address>``, the simulator's own fault-API names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from libs.events.acquisition import Medium
from libs.protocols.simulator.site import SiteConfig, default_site
from libs.protocols.transport import LineSettings
from services.acquisition.registry import (
    AlternateRoute,
    Bus,
    Concentrator,
    Meter,
    Project,
    Registry,
    SerialEndpoint,
    TcpEndpoint,
    parse_endpoint,
)

# what a simulated meter reads, by protocol (its driver's vocabulary, as the registry spells it)
QUANTITIES: dict[str, tuple[str, ...]] = {
    "dlt645-2007": ("active_import_kwh", "voltage_a_v", "current_a_a", "power_kw", "relay"),
    "dlt645-1997": ("active_import_kwh", "voltage_a_v", "current_a_a", "power_kw"),
    "modbus-rtu": ("active_import_kwh", "voltage_a_v", "current_a_a", "power_kw"),
    "cjt188": ("volume_m3", "valve"),
    "mbus": ("volume_m3",),
}
_MEDIA = {"electricity": Medium.ELECTRICITY, "water": Medium.WATER, "gas": Medium.GAS, "heat": Medium.HEAT}


def read_lines(path: Path | str) -> list[dict[str, Any]]:
    """The bus lines of a file of simulator output (other lines, e.g. ``control``, are ignored)."""
    lines = []
    for raw in Path(path).read_text().splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            doc = json.loads(raw)
            if "bus" in doc and "unavailable" not in doc:
                lines.append(doc)
    return lines


def registry_from_lines(
    lines: Iterable[dict[str, Any]],
    site: SiteConfig | None = None,
    project_id: str = "demo",
    transport: str = "tcp",
    quantities: dict[str, tuple[str, ...]] | None = None,
) -> Registry:
    """Build the registry of a simulated site; ``transport`` picks ``tcp`` or ``pty`` endpoints."""
    site = site or default_site()
    wanted = quantities or QUANTITIES
    configs = {b.name: (b, site.model) for c in site.concentrators for b in c.buses}
    by_concentrator: dict[str, list[Bus]] = {}
    alternates: dict[str, set[str]] = {}
    uplinks: dict[str, TcpEndpoint | SerialEndpoint] = {}
    for line in lines:
        name = line["bus"]
        if name not in configs:
            raise ValueError(f"bus {name} is not in site {site.name!r}")
        cfg, model_of = configs[name]
        settings = LineSettings.parse(line["link"])
        endpoint = (
            parse_endpoint(line[transport]) if transport == "tcp" else SerialEndpoint(device=line["pty"])
        )
        meters = []
        for m in cfg.meters:
            model = model_of(m.model)
            meters.append(
                Meter(
                    id=f"{name}/{m.address}",
                    protocol=cfg.protocol,
                    address=m.address,
                    model=model.modbus_map or m.model,
                    medium=_MEDIA[model.kind],
                    quantities=wanted[cfg.protocol],
                    password=model.password,
                    operator_code=model.operator,
                )
            )
        routes: tuple[AlternateRoute, ...] = ()
        if "alternate" in line:
            alt = line["alternate"]
            routes = (
                AlternateRoute(concentrator_id=alt["concentrator"], transport=parse_endpoint(alt["tcp"])),
            )
            alternates.setdefault(line["concentrator"], set()).add(alt["concentrator"])
        by_concentrator.setdefault(line["concentrator"], []).append(
            Bus(
                id=name,
                transport=endpoint,
                alternate_routes=routes,
                protocol=cfg.protocol,
                baud=settings.baud,
                data_bits=settings.data_bits,
                parity=settings.parity,
                stop_bits=1 if settings.stop_bits == 1 else 2,
                meters=tuple(meters),
            )
        )
        uplinks.setdefault(line["concentrator"], endpoint)
    project = Project(
        id=project_id,
        name=site.name,
        concentrators=tuple(
            Concentrator(
                id=cid,
                uplink=uplinks[cid],
                alternates=tuple(sorted(alternates.get(cid, ()))),
                buses=tuple(buses),
            )
            for cid, buses in by_concentrator.items()
        ),
    )
    return Registry(projects=(project,))


def load_registry(path: Path | str, site: SiteConfig | None = None, project_id: str = "demo") -> Registry:
    """``MF_ACQ_SIMULATOR``: the registry of the simulator whose lines are in ``path``."""
    return registry_from_lines(read_lines(path), site, project_id)
