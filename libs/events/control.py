"""Facts of the relay / valve / parameter command lifecycle (MISSION.md C1–C8)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from libs.events.base import Event, event
from libs.events.topics import COMMANDS


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


@event("control.v1.command_failed", COMMANDS.name)
class CommandFailed(Event):
    """A command attempt failed; ``will_retry`` says whether another attempt follows."""

    command_id: str
    meter_id: str
    attempt: int = Field(ge=1)
    reason: str
    will_retry: bool
