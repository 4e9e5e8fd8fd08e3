"""Facts from the field: topology, readings, communication status (MISSION.md A1–A9)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from libs.events.base import Event, event
from libs.events.topics import COMM, READINGS, REGISTRY_TOPIC


class Rate(StrEnum):
    """Tariff rate of a cumulative register (DL/T 645: total, rates 1–4 = sharp/peak/flat/valley)."""

    TOTAL = "total"
    SHARP = "sharp"
    PEAK = "peak"
    FLAT = "flat"
    VALLEY = "valley"


class Medium(StrEnum):
    """What a meter measures."""

    ELECTRICITY = "electricity"
    WATER = "water"
    HOT_WATER = "hot_water"
    GAS = "gas"
    HEAT = "heat"


class SwitchState(StrEnum):
    """Relay or valve position as the meter reports it."""

    CLOSED = "closed"  # relay closed = power on; valve closed = no flow (see `ValveState`)
    OPEN = "open"
    UNKNOWN = "unknown"


class Frozen(BaseModel):
    """Value objects inside events are frozen too."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Route(Frozen):
    """How a reading reached the platform: concentrator, bus and, after failover, the path taken."""

    concentrator_id: str
    bus_id: str
    via: tuple[str, ...] = ()  # concentrators passed through when an alternate route is in use
    failover: bool = False


@event("acquisition.v1.meter_registered", REGISTRY_TOPIC.name)
class MeterRegistered(Event):
    """A meter was added to the topology (subject: meter id)."""

    meter_id: str
    address: str  # display order, as printed on the nameplate
    protocol: str  # dlt645-2007 | dlt645-1997 | modbus-rtu | cjt188 | mbus
    model: str
    medium: Medium
    concentrator_id: str
    bus_id: str
    multiplier: Decimal = Decimal(1)  # CT/PT ratio applied to energy registers
    register_digits: int = Field(default=8, ge=1, le=12)  # register capacity, for rollover
    register_decimals: int = Field(default=2, ge=0, le=6)


@event("acquisition.v1.meter_updated", REGISTRY_TOPIC.name)
class MeterUpdated(Event):
    """Some attributes of a registered meter changed; ``changes`` holds the new values."""

    meter_id: str
    changes: dict[str, str]


class ReplacementReason(StrEnum):
    """Why a meter's registers restarted (``MeterReplaced.reason``)."""

    REPLACED = "replaced"  # a physical swap: another meter at the metering point
    CLEARED = "cleared"  # the same meter cleared its registers (DL/T 645-2007 电表清零 1AH, C5)


@event("acquisition.v1.meter_replaced", REGISTRY_TOPIC.name)
class MeterReplaced(Event):
    """A meter's registers restarted: final reads before, initial reads after ``replaced_at``.

    ``reason`` says how: a physical swap (``replaced``; the addresses may differ) or a clear of
    the same meter (``cleared``: ``old_address == new_address``, the initial reads are the zeros
    read back after the clear). Billing charges up to the final reads and re-baselines on the
    initial ones either way. ``replaced_at`` is on the clock the meter's readings are timed by
    (its own clock when that is read, else the platform's). Events from before ``reason`` existed
    decode as ``replaced``.
    """

    meter_id: str
    old_address: str
    new_address: str
    final_registers: dict[str, dict[Rate, Decimal]]
    initial_registers: dict[str, dict[Rate, Decimal]]
    replaced_at: AwareDatetime
    reason: ReplacementReason = ReplacementReason.REPLACED


@event("acquisition.v1.reading_recorded", READINGS.name)
class ReadingRecorded(Event):
    """One successful read of one meter (subject: meter id).

    ``registers`` are cumulative counters per quantity and tariff rate (e.g.
    ``{"active_import_kwh": {"total": …, "peak": …}}``, ``{"volume_m3": {"total": …}}``);
    ``instant`` holds instantaneous values (``voltage_a_v``, ``power_kw``, ``power_factor`` …).
    ``meter_time`` is the meter's own clock (None when not read), ``received_at`` when the
    platform received the reply. ``registers_since`` is the ``replaced_at`` of the latest
    ``MeterReplaced`` (a clear or a swap) the reader had published for this meter before it took
    the reading, so its registers count from there (None: none, or a reader that keeps none).
    Billing holds such a reading until that ``MeterReplaced`` is applied: the two travel on
    different topics and a consumer may fetch either first.
    """

    meter_id: str
    registers: dict[str, dict[Rate, Decimal]] = Field(default_factory=dict)
    instant: dict[str, Decimal] = Field(default_factory=dict)
    meter_time: AwareDatetime | None = None
    received_at: AwareDatetime
    route: Route
    relay: SwitchState | None = None
    valve: SwitchState | None = None
    remaining_fen: int | None = None  # prepaid meters' own remaining amount
    purchase_count: int | None = Field(default=None, ge=0)
    frozen: str | None = None  # None for live values; "daily:YYYY-MM-DD" / "monthly:YYYY-MM" for frozen reads
    registers_since: AwareDatetime | None = None


@event("acquisition.v1.reading_failed", READINGS.name)
class ReadingFailed(Event):
    """A read of one meter failed after all retries (subject: meter id)."""

    meter_id: str
    reason: str  # timeout | checksum | abnormal_reply | bus_busy | ...
    detail: str = ""
    attempts: int = Field(ge=1)
    route: Route


@event("acquisition.v1.meter_online", COMM.name)
class MeterOnline(Event):
    """A meter answers again (or for the first time)."""

    meter_id: str
    since: AwareDatetime


@event("acquisition.v1.meter_lost_contact", COMM.name)
class MeterLostContact(Event):
    """A meter stopped answering: ``consecutive_failures`` reads in a row failed (失联)."""

    meter_id: str
    consecutive_failures: int = Field(ge=1)
    last_seen: AwareDatetime | None = None


@event("acquisition.v1.concentrator_online", COMM.name)
class ConcentratorOnline(Event):
    """A concentrator / DTU is reachable."""

    concentrator_id: str
    since: AwareDatetime


@event("acquisition.v1.concentrator_offline", COMM.name)
class ConcentratorOffline(Event):
    """A concentrator / DTU stopped answering."""

    concentrator_id: str
    reason: str
    last_seen: AwareDatetime | None = None


@event("acquisition.v1.route_switched", COMM.name)
class RouteSwitched(Event):
    """A meter's polling moved to another route (failover) or back (switch-back)."""

    meter_id: str
    from_route: Route
    to_route: Route
    reason: str
