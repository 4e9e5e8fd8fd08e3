"""Balance alarms of prepaid accounts (MISSION.md B4, C1): level 1, level 2, arrears.

- Level 1 is active while ``balance <= level1_fen``, level 2 while ``balance <= level2_fen``,
  arrears while ``balance <= -overdraft_fen``. Each is raised once when its condition starts and
  cleared when a balance change (recharge, allowance, adjustment) ends it.
- Ids are deterministic: an alarm's id derives from the account, the kind and the event that
  raised it, so replaying the log raises the same alarm with the same id.
- The ``arrears`` alarm *is* billing's request to control: control folds it per meter (routed by
  the account's meters, which the alarm also lists in ``details["meter_ids"]``) and decides the
  relay itself, so keep-power and forced states are honoured; its clearing asks for the restore.
  Billing never emits relay commands.
- Postpaid accounts owe by design until settlement: they get no balance alarms here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.events.base import Event, event_id_for
from libs.events.billing import AlarmCleared, AlarmKind, AlarmRaised

SEVERITY = {AlarmKind.BALANCE_LEVEL1: 1, AlarmKind.BALANCE_LEVEL2: 2, AlarmKind.ARREARS: 3}


@dataclass(frozen=True)
class AlarmPolicy:
    level1_fen: int = 2000
    level2_fen: int = 500

    def __post_init__(self) -> None:
        if self.level2_fen > self.level1_fen:
            raise ValueError(f"level 2 ({self.level2_fen}) must not exceed level 1 ({self.level1_fen})")


@dataclass(frozen=True)
class AlarmConfig:
    """Thresholds: per account, else per project, else the default (AccountOpened has none yet)."""

    default: AlarmPolicy = AlarmPolicy()
    per_project: dict[str, AlarmPolicy] = field(default_factory=dict)
    per_account: dict[str, AlarmPolicy] = field(default_factory=dict)

    def policy(self, project_id: str, account_id: str) -> AlarmPolicy:
        return self.per_account.get(account_id) or self.per_project.get(project_id) or self.default


@dataclass(frozen=True)
class Subject:
    """What the evaluation needs to know about the account."""

    project_id: str
    account_id: str
    meter_ids: tuple[str, ...]
    overdraft_fen: int


def conditions(balance_fen: int, overdraft_fen: int, policy: AlarmPolicy) -> set[AlarmKind]:
    out = set()
    if balance_fen <= policy.level1_fen:
        out.add(AlarmKind.BALANCE_LEVEL1)
    if balance_fen <= policy.level2_fen:
        out.add(AlarmKind.BALANCE_LEVEL2)
    if balance_fen <= -overdraft_fen:
        out.add(AlarmKind.ARREARS)
    return out


def cause_of(event: Event) -> str:
    """What changed the balance or the limits: recharge, refund, clear, allowance, adjustment,
    charge or thresholds (``AlarmCleared.details["cause"]``: notify does not tell a holder that an
    alarm ended after a recharge — the recharge's own message says so)."""
    name = event.TYPE.rsplit(".", 1)[-1]
    if name == "alarm_thresholds_set":
        return "thresholds"
    return name.removesuffix("_accepted").removesuffix("_applied")


def evaluate(
    subject: Subject,
    active: dict[AlarmKind, str],
    balance_fen: int,
    cause: Event,
    policy: AlarmPolicy,
) -> tuple[dict[AlarmKind, str], list[Event]]:
    """New active alarms (kind → alarm id) and the facts to emit after a balance change."""
    now = conditions(balance_fen, subject.overdraft_fen, policy)
    out: list[Event] = []
    envelope = {
        "project_id": subject.project_id,
        "subject_id": subject.account_id,
        "time": cause.time,
        "causation_id": cause.event_id,
        "correlation_id": cause.correlation_id or cause.event_id,
    }
    result = dict(active)
    for kind in sorted(now - set(active)):
        alarm_id = event_id_for(subject.project_id, "alarm", subject.account_id, kind.value, cause.event_id)
        result[kind] = alarm_id
        out.append(
            AlarmRaised(
                event_id=event_id_for(subject.project_id, "alarm_raised", alarm_id),
                alarm_id=alarm_id,
                kind=kind,
                severity=SEVERITY[kind],
                message=f"account {subject.account_id}: {kind.value} at balance {balance_fen} fen",
                details={"balance_fen": str(balance_fen), "meter_ids": ",".join(subject.meter_ids)},
                **envelope,
            )
        )
    for kind in sorted(set(active) - now):
        alarm_id = result.pop(kind)
        out.append(
            AlarmCleared(
                event_id=event_id_for(subject.project_id, "alarm_cleared", alarm_id),
                alarm_id=alarm_id,
                kind=kind,
                reason=f"balance {balance_fen} fen",
                # the meters too, as when raised: control's router routes by them (no state)
                details={
                    "balance_fen": str(balance_fen),
                    "cause": cause_of(cause),
                    "meter_ids": ",".join(subject.meter_ids),
                },
                **envelope,
            )
        )
    return result, out
