"""The records the API's read model keeps per project (meters, accounts, tariffs, money, alarms,
users, API keys, webhooks): plain values that :mod:`services.api.views` folds from the facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from libs.events import billing as bil

Key = tuple[str, str]
V = TypeVar("V")


class MeterState(StrEnum):
    """The console's colour-coded states (F6); a meter can be in several at once."""

    UNINITIALISED = "uninitialised"  # no account opened for it (未开户)
    ONLINE = "online"
    LOST_CONTACT = "lost-contact"
    ALARM_1 = "alarm-1"
    ALARM_2 = "alarm-2"
    ARREARS = "arrears"
    TRIPPED = "tripped"


ACCOUNT_ALARMS = {  # the meter states an account alarm shows as
    bil.AlarmKind.BALANCE_LEVEL1: MeterState.ALARM_1,
    bil.AlarmKind.BALANCE_LEVEL2: MeterState.ALARM_2,
    bil.AlarmKind.ARREARS: MeterState.ARREARS,
}


class ProjectTable(dict[Key, V]):
    """A dict keyed by ``(project, id)`` that also indexes its values per project (in insertion
    order), so that a request scoped to some projects never scans the others' entries."""

    def __init__(self) -> None:
        super().__init__()
        self.by_project: dict[str, dict[str, V]] = {}

    def __setitem__(self, key: Key, value: V) -> None:
        super().__setitem__(key, value)
        self.by_project.setdefault(key[0], {})[key[1]] = value

    def setdefault(self, key: Key, default: V) -> V:
        if key not in self:
            self[key] = default
        return self[key]


@dataclass
class Meter:
    project_id: str
    meter_id: str
    address: str
    protocol: str
    model: str
    medium: str
    concentrator_id: str
    bus_id: str
    registered_at: datetime
    attributes: dict[str, str] = field(default_factory=dict)
    comm: str = "unknown"  # unknown | online | lost_contact
    last_seen: datetime | None = None
    account_id: str | None = None
    relay: str = "unknown"  # unknown | tripped | closed (as last acknowledged)


@dataclass
class Concentrator:
    project_id: str
    concentrator_id: str
    status: str = "unknown"  # unknown | online | offline
    since: datetime | None = None
    meters: set[str] = field(default_factory=set)


@dataclass
class Account:
    project_id: str
    account_id: str
    mode: str
    meter_ids: tuple[str, ...]
    opening_tariff_id: str  # the tariff now in force is Views.tariff_at(account, now)
    holder: str
    phone: str | None
    overdraft_fen: int
    opened_at: datetime
    opened_by: str
    balance_fen: int = 0
    balance_at: datetime | None = None


@dataclass
class TariffChange:
    """One ``AccountTariffChanged``: the account is priced by ``tariff_id`` from ``effective`` on
    (``effective_from``, or when it was recorded if that is later: never backdated)."""

    project_id: str
    event_id: str
    account_id: str
    tariff_id: str
    effective_from: datetime
    effective: datetime
    recorded_at: datetime
    operator_id: str
    reason: str
    superseded: bool = False  # a later change took effect at the same instant (billing: it wins)


@dataclass
class Money:
    """One accepted money movement and, once billing applied it, the balance after it."""

    project_id: str
    event_id: str
    kind: str  # recharge | refund | clear | allowance
    account_id: str
    amount_fen: int
    idempotency_key: str
    operator_id: str
    time: datetime
    details: dict[str, str]
    balance_fen: int | None = None  # None until billing's BalanceChanged arrived
    applied_at: datetime | None = None


@dataclass
class Tariff:
    project_id: str
    tariff_id: str
    versions: dict[int, bil.TariffPublished] = field(default_factory=dict)


@dataclass
class Alarm:
    project_id: str
    alarm_id: str
    subject_id: str
    kind: str
    severity: int
    message: str
    raised_at: datetime
    cleared_at: datetime | None = None


@dataclass
class User:
    user_id: str
    username: str
    password_hash: str
    roles: tuple[str, ...]
    project_ids: tuple[str, ...]
    all_projects: bool
    created_at: datetime
    account_ids: tuple[str, ...] = ()
    disabled: bool = False


@dataclass
class ApiKey:
    key_id: str
    name: str
    secret_sha256: str
    roles: tuple[str, ...]
    project_ids: tuple[str, ...]
    all_projects: bool
    issued_at: datetime
    revoked: bool = False


@dataclass
class Webhook:
    webhook_id: str
    project_ids: tuple[str, ...]
    event_types: tuple[str, ...]
    url: str
    secret_sealed: str
    created_by: str
    created_at: datetime
    active: bool = True
