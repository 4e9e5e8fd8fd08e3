"""Builders of facts for control tests: a Shanghai clock and short constructors."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from libs.events import AlarmCleared, AlarmRaised, ReadingRecorded, Route
from libs.events import control as f
from libs.events.billing import AlarmKind

SH = ZoneInfo("Asia/Shanghai")
P = "proj-1"
M = "m1"
ROUTE = Route(concentrator_id="c1", bus_id="b1")
_ids = itertools.count()


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc,arg-type]


def eid(prefix: str = "e") -> str:
    return f"{prefix}-{next(_ids)}"


def env(when: datetime, meter: str = M, **kw: Any) -> dict[str, Any]:
    return {"event_id": eid(), "project_id": P, "subject_id": meter, "time": when, **kw}


def reading(when: datetime, power: Any, pf: Any = None, meter: str = M) -> ReadingRecorded:
    instant = {"power_kw": Decimal(str(power))}
    if pf is not None:
        instant["power_factor"] = Decimal(str(pf))
    return ReadingRecorded(**env(when, meter), meter_id=meter, instant=instant, received_at=when, route=ROUTE)


def arrears(when: datetime, meter: str = M) -> AlarmRaised:
    return AlarmRaised(
        **env(when, meter), alarm_id="a1", kind=AlarmKind.ARREARS, severity=3, message="arrears"
    )


def arrears_cleared(when: datetime, meter: str = M) -> AlarmCleared:
    return AlarmCleared(**env(when, meter), alarm_id="a1", kind=AlarmKind.ARREARS, reason="recharge")


def op(cls: type[f.OperatorFact], when: datetime, meter: str = M, operator: str = "op-1", **kw: Any) -> Any:
    return cls(**env(when, meter), meter_id=meter, operator_id=operator, **kw)
