"""Facts of control (MISSION.md C1–C8): the command lifecycle, and what operators set.

- ``mf.commands`` (key: meter id): a command requested (by whom and why: ``requested_by`` is an
  operator id or ``policy:<name>``), sent, acknowledged, failed, timed out, and abandoned (control
  gave up on it). Together with the operator facts it is the audit trail of every relay / valve /
  parameter change.
- ``mf.control`` (key: meter id; batch id for a batch): what an operator set for a meter —
  forced state, keep-power 保电, socket reset, lockout release, load limit 负控, malignant-load
  rule 恶性负载, time control 时控 — each with ``operator_id`` and ``reason``; and batch
  operations over many meters. Control's policy turns them into commands.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from libs.events.base import Event, event
from libs.events.topics import COMMANDS, CONTROL

DEFAULT_TZ = "Asia/Shanghai"


class Action(StrEnum):
    """What a command asks a meter to do."""

    TRIP = "trip"  # 拉闸
    CLOSE = "close"  # 合闸 (close allowed)
    KEEP_POWER_ON = "keep_power_on"  # 保电
    KEEP_POWER_OFF = "keep_power_off"
    ALARM_ON = "alarm_on"
    ALARM_OFF = "alarm_off"
    VALVE_OPEN = "valve_open"
    VALVE_CLOSE = "valve_close"
    TIME_SYNC = "time_sync"
    SET_PARAMETER = "set_parameter"
    READ = "read"  # on-demand read
    # C5: DL/T 645-2007 meter clear 1AH (电表清零: energy registers, demand, freezes, event and
    # load records to zero). Acquisition reads the registers before and after and publishes a
    # ``MeterReplaced(reason="cleared")`` so billing charges up to the clear and starts again at 0.
    CLEAR = "clear"
    # C5: meter-side initialisation of a prepaid meter before (re)use: today the same meter clear
    # (see services/acquisition/commands.py); prices and limits follow from control's parameter
    # download (C8), the balance from billing.
    INITIALISE = "initialise"


@event("control.v1.command_requested", COMMANDS.name)
class CommandRequested(Event):
    """Someone or some policy asked for a command (subject: meter id)."""

    command_id: str
    meter_id: str
    action: Action
    requested_by: str  # operator id, or "policy:<name>"
    reason: str
    params: dict[str, str] = Field(default_factory=dict)
    priority: int = Field(default=50, ge=0, le=100)
    expires_at: AwareDatetime | None = None


@event("control.v1.command_sent", COMMANDS.name)
class CommandSent(Event):
    """The frame for a command went out on the bus."""

    command_id: str
    meter_id: str
    attempt: int = Field(ge=1)
    frame_hex: str = ""


@event("control.v1.command_acknowledged", COMMANDS.name)
class CommandAcknowledged(Event):
    """The meter confirmed a command; ``confirmed_state`` is the state read back, if any."""

    command_id: str
    meter_id: str
    reply_hex: str = ""
    confirmed_state: str | None = None


# Failure reasons (prefixes of ``CommandFailed.reason``) that control retries until the command's
# last attempt; any other failure ends the command at once. Only control applies this rule: the
# end of a command is its ``CommandAbandoned`` (or ``CommandAcknowledged``), for everyone else.
RETRIABLE_REASONS = ("no_reply", "bad_reply", "transport", "not_confirmed")


@event("control.v1.command_failed", COMMANDS.name)
class CommandFailed(Event):
    """A command attempt failed; ``will_retry`` says whether another attempt follows."""

    command_id: str
    meter_id: str
    attempt: int = Field(ge=1)
    reason: str
    will_retry: bool


@event("control.v1.command_timed_out", COMMANDS.name)
class CommandTimedOut(Event):
    """C7: no reply in time, for one attempt (``attempt`` set) or the whole command (None)."""

    command_id: str
    meter_id: str
    attempt: int | None = Field(default=None, ge=1)
    deadline: AwareDatetime


class Outcome(StrEnum):
    """How a command ended without an acknowledgement (:class:`CommandAbandoned`)."""

    FAILED = "failed"  # its last attempt failed, or the meter refused it (a reason not retried)
    TIMED_OUT = "timed_out"  # its last attempt got no reply in time, or the command's deadline passed
    SUPERSEDED = "superseded"  # a newer command on the same meter and channel replaced it


@event("control.v1.command_abandoned", COMMANDS.name)
class CommandAbandoned(Event):
    """C7: control gave up on a command: no further attempt follows and none is waited for.

    Control publishes it once per command that ends unacknowledged (``outcome``), after the fact
    that ended it (``causation_id``: the last failure, the timeout, or the superseding request),
    stamped with that fact's time. Its id derives from the project and the command id, so a replay
    re-emitting it is a duplicate. ``attempts``: attempts sent; ``reason``: the last failure's
    reason, ``no reply in time`` or ``superseded by <command id>``. A meter may still acknowledge
    an abandoned command late (it did act): ``CommandAcknowledged`` then follows this fact.
    """

    command_id: str
    meter_id: str
    action: Action
    outcome: Outcome
    attempts: int = Field(ge=0)
    reason: str
    requested_by: str


class Supply(StrEnum):
    """What the platform wants at a metering point: power / water / gas on or off."""

    ON = "on"
    OFF = "off"


def _zone(value: str) -> str:
    ZoneInfo(value)  # raises for an unknown zone
    return value


class _Protection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    restore_delay_s: int = Field(default=300, ge=0)
    max_restores_per_day: int = Field(default=3, ge=0)
    tz: str = DEFAULT_TZ

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone(value)


class LoadLimit(_Protection):
    """负控: trip when ``power_kw`` stays above ``limit_kw`` for ``sustain_s`` (see protection.py)."""

    limit_kw: Decimal = Field(gt=0)
    sustain_s: int = Field(default=60, ge=0)


class MalignantRule(_Protection):
    """恶性负载: a resistive step of ``min_step_kw`` at ``min_power_factor`` (see protection.py)."""

    min_step_kw: Decimal = Field(default=Decimal("0.5"), gt=0)
    min_power_factor: Decimal = Field(default=Decimal("0.95"), ge=0, le=1)
    sustain_readings: int = Field(default=2, ge=1)
    min_power_kw: Decimal = Field(default=Decimal(0), ge=0)
    restore_delay_s: int = Field(default=180, ge=0)
    whitelisted: bool = False


class TimeControl(BaseModel):
    """时控: cron ``off`` / ``on`` moments read in ``tz``; ``holidays`` skip an off (schedules.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    off: str
    on: str
    tz: str = DEFAULT_TZ
    holidays: frozenset[date] = frozenset()

    @field_validator("off", "on")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _zone(value)


class OperatorFact(Event):
    """Something an operator set for one meter (subject: the meter id), with who and why."""

    meter_id: str
    operator_id: str
    reason: str = ""


@event("control.v1.forced_state_set", CONTROL.name)
class ForcedStateSet(OperatorFact):
    """C2: an operator pins the supply on or off; beats every policy until cleared."""

    state: Supply


@event("control.v1.forced_state_cleared", CONTROL.name)
class ForcedStateCleared(OperatorFact):
    """C2: the pin is removed; the policies decide again."""


@event("control.v1.keep_power_set", CONTROL.name)
class KeepPowerSet(OperatorFact):
    """C1 保电: automatic trips (prepaid, load, malignant, schedule) are blocked until cleared."""


@event("control.v1.keep_power_cleared", CONTROL.name)
class KeepPowerCleared(OperatorFact):
    """C1: back to prepaid mode: automatic trips apply again."""


@event("control.v1.socket_reset_requested", CONTROL.name)
class SocketResetRequested(OperatorFact):
    """C4: trip, then close again ``off_seconds`` later (AC-socket reset)."""

    off_seconds: int = Field(default=10, ge=1, le=3600)


@event("control.v1.lockout_released", CONTROL.name)
class LockoutReleased(OperatorFact):
    """C4: an operator releases a load-control / malignant-load lockout (max restores reached)."""


@event("control.v1.load_limit_set", CONTROL.name)
class LoadLimitSet(OperatorFact):
    """C4 负控: the power limit of a meter; ``limit`` None removes it."""

    limit: LoadLimit | None


@event("control.v1.malignant_rule_set", CONTROL.name)
class MalignantRuleSet(OperatorFact):
    """C4 恶性负载: the detection rule of a meter; ``rule`` None removes it."""

    rule: MalignantRule | None


@event("control.v1.time_control_set", CONTROL.name)
class TimeControlSet(OperatorFact):
    """C3 时控: the timed on/off calendar of a meter; ``schedule`` None removes it.

    Groups are expanded to one fact per meter by a batch operation."""

    schedule: TimeControl | None


class Operation(StrEnum):
    """What a batch does to each of its meters (C5)."""

    INITIALISE = "initialise"
    CLEAR = "clear"
    ISSUE_PRICES = "issue_prices"
    TIME_CONTROL = "time_control"
    LOAD_CONTROL = "load_control"


@event("control.v1.batch_requested", CONTROL.name)
class BatchRequested(Event):
    """C5: an operator asked for one operation on many meters (subject: the batch id)."""

    batch_id: str
    operation: Operation
    meter_ids: tuple[str, ...] = Field(min_length=1)
    operator_id: str
    reason: str = ""
    params: dict[str, str] = Field(default_factory=dict)  # the same for every meter
    per_meter: dict[str, dict[str, str]] = Field(default_factory=dict)  # e.g. prices per meter
    schedule: TimeControl | None = None  # time_control
    limit: LoadLimit | None = None  # load_control
