"""Facts the control domain needs that libs/events does not define yet (requested in NEEDS.md).

They subclass :class:`libs.events.base.Event` (same envelope: event id, project, subject = meter
id, time) but are *not registered*, so they cannot go on the wire until they move to
``libs/events/control.py``. Configuration objects they carry live in the modules that use them.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from libs.events.base import Event
from services.control.domain.protection import LoadLimit, MalignantRule
from services.control.domain.schedules import TimeControl


class Supply(StrEnum):
    """What the platform wants at a metering point: power / water / gas on or off."""

    ON = "on"
    OFF = "off"


class OperatorFact(Event):
    meter_id: str
    operator_id: str
    reason: str = ""


class ForcedStateSet(OperatorFact):
    """C2: an operator pins the supply on or off; beats every policy until cleared."""

    state: Supply


class ForcedStateCleared(OperatorFact):
    """C2: the pin is removed; the policies decide again."""


class KeepPowerSet(OperatorFact):
    """C1 保电: automatic trips (prepaid, load, malignant, schedule) are blocked until cleared."""


class KeepPowerCleared(OperatorFact):
    """C1: back to prepaid mode: automatic trips apply again."""


class SocketResetRequested(OperatorFact):
    """C4: trip, then close again ``off_seconds`` later (AC-socket reset)."""

    off_seconds: int = Field(default=10, ge=1, le=3600)


class LockoutReleased(OperatorFact):
    """C4: an operator releases a load-control / malignant-load lockout (max restores reached)."""


class LoadLimitSet(OperatorFact):
    """C4 负控: the power limit of a meter; ``limit`` None removes it."""

    limit: LoadLimit | None


class MalignantRuleSet(OperatorFact):
    """C4 恶性负载: the detection rule of a meter; ``rule`` None removes it."""

    rule: MalignantRule | None


class TimeControlSet(OperatorFact):
    """C3 时控: the timed on/off calendar of a meter; ``schedule`` None removes it.

    Groups are expanded to one fact per meter by a batch operation (batch.py)."""

    schedule: TimeControl | None


class CommandTimedOut(Event):
    """C7: no reply in time, for one attempt (``attempt`` set) or the whole command (None)."""

    command_id: str
    meter_id: str
    attempt: int | None = Field(default=None, ge=1)
    deadline: AwareDatetime
