"""The acquisition topology (A1): projects → concentrators/DTUs → buses → meters, as frozen models.

A :class:`Registry` is immutable: every change (an import, an applied event) returns a new one, so
a failed change never leaves a half-updated topology behind. Meters travel on the event log as
``MeterRegistered`` plus a ``MeterUpdated`` carrying the attributes ``MeterRegistered`` has no field
for (quantities, schedule, group, account, name); a removal is ``MeterUpdated({"status": "removed"})``.
Meter passwords and operator codes never go on the log: they are ``SecretStr`` (hidden in repr and
logs) and :meth:`Registry.apply` keeps the ones the registry it is applied to already holds.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from libs.events.acquisition import Medium, MeterRegistered, MeterReplaced, MeterUpdated
from libs.events.base import Event, event_id_for
from libs.events.quantities import INSTANT, REGISTERS
from libs.protocols.registry import PROTOCOL_MODULES

_MODELS_DIR = Path(__file__).resolve().parents[2] / "libs" / "protocols" / "models"
MODBUS_MODELS: frozenset[str] = frozenset(
    json.loads(p.read_text())["model"] for p in _MODELS_DIR.glob("*.json")
)
BAUDS: frozenset[int] = frozenset({300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200})
# Quantities a read job may ask for: the reading vocabulary plus the non-numeric items of A4.
QUANTITIES: frozenset[str] = (
    REGISTERS | INSTANT | {"meter_time", "remaining_amount", "purchase_count", "relay", "valve"}
)
_ADDRESS = {  # display-order address forms per protocol
    "dlt645-2007": (re.compile(r"^\d{12}$"), "12 decimal digits"),
    "dlt645-1997": (re.compile(r"^\d{12}$"), "12 decimal digits"),
    "cjt188": (re.compile(r"^[0-9A-Fa-f]{14}$"), "14 hex digits"),
    "mbus": (re.compile(r"^(\d{1,3}|\d{8})$"), "a primary address 0-250 or an 8-digit secondary address"),
}
_MEDIA = {
    "dlt645-2007": {Medium.ELECTRICITY},
    "dlt645-1997": {Medium.ELECTRICITY},
    "modbus-rtu": {Medium.ELECTRICITY},
}
EXTRA_FIELDS = ("quantities", "schedule", "group", "account_id", "name")  # carried by MeterUpdated
REMOVED = {"status": "removed"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TcpEndpoint(_Frozen):
    kind: Literal["tcp"] = "tcp"
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class SerialEndpoint(_Frozen):
    kind: Literal["serial"] = "serial"
    device: str = Field(min_length=1)

    def __str__(self) -> str:
        return self.device


Endpoint = Annotated[TcpEndpoint | SerialEndpoint, Field(discriminator="kind")]


def parse_endpoint(text: str) -> TcpEndpoint | SerialEndpoint:
    """``10.0.0.5:8899`` → TCP, anything else (``/dev/ttyS1``, ``COM3``, ``1``) → a serial device."""
    host, sep, port = text.strip().rpartition(":")
    if sep and port.isdigit() and host:
        return TcpEndpoint(host=host, port=int(port))
    return SerialEndpoint(device=text.strip())


def _known_protocol(value: str) -> str:
    if value not in PROTOCOL_MODULES:
        raise ValueError(f"unknown protocol {value!r}; known: {', '.join(PROTOCOL_MODULES)}")
    return value


class Meter(_Frozen):
    id: str = Field(min_length=1, max_length=128)
    protocol: str
    address: str = Field(min_length=1)  # display order, as on the nameplate
    model: str = Field(min_length=1)
    medium: Medium = Medium.ELECTRICITY
    quantities: tuple[str, ...] = ("active_import_kwh",)
    schedule: str = "default"
    group: str | None = None
    name: str = ""
    password: SecretStr | None = None  # DL/T 645 control password, hex (kept out of repr and events)
    operator_code: SecretStr | None = None
    multiplier: Decimal = Field(default=Decimal(1), gt=0)
    register_digits: int = Field(default=8, ge=1, le=12)
    register_decimals: int = Field(default=2, ge=0, le=6)
    account_id: str | None = None

    _protocol = field_validator("protocol")(_known_protocol)

    @field_validator("quantities")
    @classmethod
    def _known_quantities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [q for q in value if q not in QUANTITIES]
        if unknown:
            raise ValueError(f"unknown quantities {', '.join(unknown)}")
        return value

    # Field validators run in declaration order, so ``protocol`` is in ``info.data`` for the ones below.
    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str, info: ValidationInfo) -> str:
        protocol = info.data.get("protocol")
        if protocol == "modbus-rtu":
            if not (value.isdigit() and 1 <= int(value) <= 247):
                raise ValueError(f"modbus-rtu address must be 1-247, got {value!r}")
        elif protocol in _ADDRESS:
            pattern, form = _ADDRESS[protocol]
            if not pattern.match(value) or (len(value) <= 3 and int(value) > 250):
                raise ValueError(f"{protocol} address must be {form}, got {value!r}")
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("protocol") == "modbus-rtu" and value not in MODBUS_MODELS:
            raise ValueError(f"unknown modbus model {value!r}; known: {', '.join(sorted(MODBUS_MODELS))}")
        return value

    @field_validator("medium")
    @classmethod
    def _medium_fits(cls, value: Medium, info: ValidationInfo) -> Medium:
        protocol = info.data.get("protocol")
        if protocol in _MEDIA and value not in _MEDIA[protocol]:
            raise ValueError(f"{protocol} meters measure electricity, not {value}")
        if protocol == "cjt188" and value == Medium.ELECTRICITY:
            raise ValueError("cjt188 meters measure water, gas or heat, not electricity")
        return value


class AlternateRoute(_Frozen):
    """How another concentrator reaches this bus (cascade, A7): its id and the endpoint to use."""

    concentrator_id: str = Field(min_length=1)
    transport: Endpoint


class Bus(_Frozen):
    id: str = Field(min_length=1)
    transport: Endpoint
    alternate_routes: tuple[AlternateRoute, ...] = ()
    protocol: str
    baud: int = 2400
    data_bits: int = Field(default=8, ge=5, le=8)
    parity: Literal["N", "E", "O"] = "E"
    stop_bits: Literal[1, 2] = 1
    response_timeout_ms: int = Field(default=1000, ge=10, le=60_000)
    inter_frame_delay_ms: int = Field(default=50, ge=0, le=10_000)
    meters: tuple[Meter, ...] = ()

    _protocol = field_validator("protocol")(_known_protocol)

    @field_validator("baud")
    @classmethod
    def _standard_baud(cls, value: int) -> int:
        if value not in BAUDS:
            raise ValueError(f"baud {value} is not a standard rate ({', '.join(map(str, sorted(BAUDS)))})")
        return value

    @model_validator(mode="after")
    def _check(self) -> Bus:
        seen: set[str] = set()
        for meter in self.meters:
            if meter.protocol != self.protocol:
                raise ValueError(
                    f"meter {meter.id} speaks {meter.protocol} but bus {self.id} is {self.protocol}"
                )
            if meter.address.upper() in seen:
                raise ValueError(f"duplicate meter address {meter.address} on bus {self.id}")
            seen.add(meter.address.upper())
        return self


class Concentrator(_Frozen):
    id: str = Field(min_length=1)
    name: str = ""
    uplink: Endpoint
    alternates: tuple[str, ...] = ()  # concentrators that can reach this one's buses (cascade)
    buses: tuple[Bus, ...] = ()


class Project(_Frozen):
    id: str = Field(min_length=1, max_length=64)
    name: str = ""
    concentrators: tuple[Concentrator, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Project:
        ids = [c.id for c in self.concentrators]
        for kind, values in (
            ("concentrator", ids),
            ("bus", [b.id for c in self.concentrators for b in c.buses]),
            ("meter", [m.id for c in self.concentrators for b in c.buses for m in b.meters]),
        ):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} id {', '.join(dupes)}")
        for c in self.concentrators:
            bad = [a for a in c.alternates if a not in ids or a == c.id]
            if bad:
                raise ValueError(f"concentrator {c.id}: unknown alternate concentrator {', '.join(bad)}")
        return self


class Located(_Frozen):
    project_id: str
    concentrator_id: str
    bus_id: str
    meter: Meter


def _meter_fields(meter: Meter) -> dict[str, str]:
    """A meter's event-carried attributes as strings (``MeterUpdated.changes`` is ``dict[str, str]``)."""
    return {
        "address": meter.address,
        "protocol": meter.protocol,
        "model": meter.model,
        "medium": meter.medium.value,
        "multiplier": str(meter.multiplier),
        "register_digits": str(meter.register_digits),
        "register_decimals": str(meter.register_decimals),
        "quantities": ",".join(meter.quantities),
        "schedule": meter.schedule,
        "group": meter.group or "",
        "account_id": meter.account_id or "",
        "name": meter.name,
    }


def _from_fields(fields: dict[str, str]) -> dict[str, object]:
    out: dict[str, object] = dict(fields)
    if "quantities" in fields:
        out["quantities"] = tuple(q for q in fields["quantities"].split(",") if q)
    for key in ("group", "account_id"):
        if key in fields:
            out[key] = fields[key] or None
    return out


class Registry(_Frozen):
    """The whole topology, with lookups; ``apply`` and ``with_project`` return new registries."""

    projects: tuple[Project, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Registry:
        ids = [p.id for p in self.projects]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate project id")
        return self

    @cached_property
    def _meters(self) -> dict[str, Located]:
        return {
            m.id: Located(project_id=p.id, concentrator_id=c.id, bus_id=b.id, meter=m)
            for p in self.projects
            for c in p.concentrators
            for b in c.buses
            for m in b.meters
        }

    @cached_property
    def _buses(self) -> dict[str, tuple[Concentrator, Bus]]:
        return {b.id: (c, b) for p in self.projects for c in p.concentrators for b in c.buses}

    def project(self, project_id: str) -> Project:
        return next(p for p in self.projects if p.id == project_id)

    def concentrator(self, concentrator_id: str) -> Concentrator:
        return next(c for p in self.projects for c in p.concentrators if c.id == concentrator_id)

    def buses_of(self, concentrator_id: str) -> tuple[Bus, ...]:
        return self.concentrator(concentrator_id).buses

    def bus(self, bus_id: str) -> Bus:
        return self._buses[bus_id][1]

    def meters_of(self, bus_id: str) -> tuple[Meter, ...]:
        return self._buses[bus_id][1].meters

    def locate(self, meter_id: str) -> Located:
        return self._meters[meter_id]

    def meter(self, meter_id: str) -> Meter:
        return self._meters[meter_id].meter

    def meter_at(self, bus_id: str, address: str) -> Meter | None:
        return next((m for m in self.meters_of(bus_id) if m.address.upper() == address.upper()), None)

    def all_meters(self) -> list[Located]:
        return list(self._meters.values())

    def with_project(self, project: Project) -> Registry:
        others = tuple(p for p in self.projects if p.id != project.id)
        return Registry(projects=(*others, project))

    def _with_bus(self, project_id: str, bus_id: str, meters: tuple[Meter, ...]) -> Registry:
        p = self.project(project_id)
        concentrators = tuple(
            c.model_copy(
                update={
                    "buses": tuple(
                        Bus.model_validate({**b.model_dump(), "meters": meters}) if b.id == bus_id else b
                        for b in c.buses
                    )
                }
            )
            for c in p.concentrators
        )
        return self.with_project(p.model_copy(update={"concentrators": concentrators}))

    def apply(self, event: Event) -> Registry:
        """Fold one registry event; concentrators and buses must already be in the registry."""
        if isinstance(event, MeterRegistered):
            old = self._meters.get(event.meter_id)
            base = self._without(event.meter_id) if old else self
            fields = _meter_fields(old.meter) if old else {}
            fields |= {
                k: str(getattr(event, k))
                for k in (
                    "address",
                    "protocol",
                    "model",
                    "medium",
                    "multiplier",
                    "register_digits",
                    "register_decimals",
                )
            }
            secrets = (
                {"password": old.meter.password, "operator_code": old.meter.operator_code} if old else {}
            )
            meter = Meter.model_validate({"id": event.meter_id, **_from_fields(fields), **secrets})
            return base._with_bus(event.project_id, event.bus_id, (*base.meters_of(event.bus_id), meter))
        if isinstance(event, MeterUpdated):
            if event.changes.get("status") == "removed":
                return self._without(event.meter_id)
            loc = self._meters[event.meter_id]
            changes = {k: v for k, v in event.changes.items() if k not in ("bus_id", "concentrator_id")}
            meter = Meter.model_validate({**loc.meter.model_dump(), **_from_fields(changes)})
            bus_id = event.changes.get("bus_id", loc.bus_id)
            base = self._without(event.meter_id)
            return base._with_bus(loc.project_id, bus_id, (*base.meters_of(bus_id), meter))
        if isinstance(event, MeterReplaced):
            return self.apply(
                MeterUpdated(
                    project_id=event.project_id,
                    subject_id=event.meter_id,
                    meter_id=event.meter_id,
                    changes={"address": event.new_address},
                    time=event.time,
                )
            )
        return self

    def _without(self, meter_id: str) -> Registry:
        loc = self._meters[meter_id]
        return self._with_bus(
            loc.project_id, loc.bus_id, tuple(m for m in self.meters_of(loc.bus_id) if m.id != meter_id)
        )

    def without_meters(self) -> Registry:
        """The same concentrators and buses with no meters: what events are replayed onto."""
        return Registry(
            projects=tuple(
                p.model_copy(
                    update={
                        "concentrators": tuple(
                            c.model_copy(
                                update={"buses": tuple(b.model_copy(update={"meters": ()}) for b in c.buses)}
                            )
                            for c in p.concentrators
                        )
                    }
                )
                for p in self.projects
            )
        )


def _registered(loc: Located, at: datetime) -> list[Event]:
    m, fields = loc.meter, _meter_fields(loc.meter)
    key = json.dumps(fields, sort_keys=True)
    first = MeterRegistered(
        event_id=event_id_for(loc.project_id, m.id, "registered", loc.bus_id, key), project_id=loc.project_id, subject_id=m.id,
        time=at, meter_id=m.id, address=m.address, protocol=m.protocol, model=m.model, medium=m.medium,
        concentrator_id=loc.concentrator_id, bus_id=loc.bus_id, multiplier=m.multiplier,
        register_digits=m.register_digits, register_decimals=m.register_decimals,
    )  # fmt: skip
    extras = {k: fields[k] for k in EXTRA_FIELDS}
    return [first, _updated(loc.project_id, m.id, extras, at)]


def _updated(project_id: str, meter_id: str, changes: dict[str, str], at: datetime) -> MeterUpdated:
    key = json.dumps(changes, sort_keys=True)
    return MeterUpdated(
        event_id=event_id_for(project_id, meter_id, "updated", at.isoformat(), key),
        project_id=project_id,
        subject_id=meter_id,
        time=at,
        meter_id=meter_id,
        changes=changes,
    )


def to_events(registry: Registry, project_id: str, at: datetime) -> list[Event]:
    """Every meter of a project as registration events (ids derived from content: replays dedupe)."""
    return [e for loc in registry.all_meters() if loc.project_id == project_id for e in _registered(loc, at)]


def diff(old: Registry, new: Registry, at: datetime) -> list[Event]:
    """Events that turn ``old``'s meters into ``new``'s: ``old.apply(*diff) == new`` up to secrets."""
    out: list[Event] = []
    before, after = {m.meter.id: m for m in old.all_meters()}, {m.meter.id: m for m in new.all_meters()}
    for meter_id, loc in before.items():
        if meter_id not in after:
            out.append(_updated(loc.project_id, meter_id, dict(REMOVED), at))
    for meter_id, loc in after.items():
        was = before.get(meter_id)
        if was is None or was.project_id != loc.project_id:
            out.extend(_registered(loc, at))
            continue
        a, b = _meter_fields(was.meter), _meter_fields(loc.meter)
        changes = {k: v for k, v in b.items() if a[k] != v}
        if (was.concentrator_id, was.bus_id) != (loc.concentrator_id, loc.bus_id):
            changes |= {"concentrator_id": loc.concentrator_id, "bus_id": loc.bus_id}
        if changes:
            out.append(_updated(loc.project_id, meter_id, changes, at))
    return out
