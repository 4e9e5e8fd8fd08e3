"""The API's read model as a pure fold: ``Views.apply(event)`` updates in-memory views of
projects, topology, accounts (with their tariff changes), balances, money movements, tariffs,
alarms, commands (:mod:`services.api.command_status`), notification settings and IAM.

No Kafka here (see :mod:`services.api.readmodel` for the consumer). Every view is keyed by
``(project_id, id)`` so that one project's ids can never answer for another's; every fold is
idempotent (a redelivered fact sets the same state), which is what at-least-once delivery needs.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from libs.events import acquisition as acq
from libs.events import billing as bil
from libs.events import control as ctl
from libs.events import iam
from libs.events import notify as nfy
from libs.events.base import Event
from services.api.command_status import Command, fold_command
from services.api.records import (
    ACCOUNT_ALARMS,
    Account,
    Alarm,
    ApiKey,
    Concentrator,
    Meter,
    MeterState,
    Money,
    ProjectTable,
    Tariff,
    TariffChange,
    User,
    Webhook,
)

Key = tuple[str, str]
V = TypeVar("V")
LOGINS_KEPT = 10_000


@dataclass
class Views:
    """Everything the API answers from, folded from the facts."""

    projects: dict[str, str] = field(default_factory=dict)  # id -> name ("" = seen, not created)
    meters: ProjectTable[Meter] = field(default_factory=ProjectTable)
    concentrators: ProjectTable[Concentrator] = field(default_factory=ProjectTable)
    accounts: ProjectTable[Account] = field(default_factory=ProjectTable)
    meter_accounts: dict[Key, str] = field(default_factory=dict)
    # facts about meters that may arrive (from other topics) before their registration
    early_comm: dict[Key, tuple[str, datetime | None]] = field(default_factory=dict)
    early_attributes: dict[Key, dict[str, str]] = field(default_factory=dict)
    # billing's consequences (mf.ledger) that arrive before their causes (mf.billing): the balance
    # of an account not yet opened, and the booking of a money movement not yet folded
    early_balances: dict[Key, tuple[int, datetime]] = field(default_factory=dict)
    early_booked: dict[str, tuple[str, int, datetime]] = field(default_factory=dict)
    money: dict[str, Money] = field(default_factory=dict)
    # tariff changes by event id, and each account's in effective order (ties: in log order)
    tariff_changes: dict[str, TariffChange] = field(default_factory=dict)
    account_tariff_changes: dict[Key, list[TariffChange]] = field(default_factory=dict)
    tariffs: ProjectTable[Tariff] = field(default_factory=ProjectTable)
    alarms: ProjectTable[Alarm] = field(default_factory=ProjectTable)
    active_alarms: dict[Key, set[str]] = field(default_factory=dict)  # (project, subject) -> ids
    commands: ProjectTable[Command] = field(default_factory=ProjectTable)
    command_attempts: dict[Key, tuple[str, int]] = field(default_factory=dict)  # retry → (command, n)
    # an account's latest notification settings, and the ids of every one folded (read-your-writes)
    subscriptions: ProjectTable[nfy.SubscriptionSet] = field(default_factory=ProjectTable)
    subscription_ids: set[str] = field(default_factory=set)
    users: dict[str, User] = field(default_factory=dict)
    usernames: dict[str, str] = field(default_factory=dict)  # username -> user id
    keys: dict[str, ApiKey] = field(default_factory=dict)
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    logins: deque[iam.LoginRecorded] = field(default_factory=lambda: deque(maxlen=LOGINS_KEPT))
    login_ids: set[str] = field(default_factory=set)
    applied: int = 0

    def states(self, meter: Meter) -> set[MeterState]:
        """The meter's current states (F6 colour codes)."""
        out: set[MeterState] = set()
        if meter.account_id is None:
            out.add(MeterState.UNINITIALISED)
        if meter.comm == "online":
            out.add(MeterState.ONLINE)
        elif meter.comm == "lost_contact":
            out.add(MeterState.LOST_CONTACT)
        if meter.relay == "tripped":
            out.add(MeterState.TRIPPED)
        subjects = [meter.meter_id] + ([meter.account_id] if meter.account_id else [])
        for subject in subjects:
            for alarm_id in self.active_alarms.get((meter.project_id, subject), ()):
                state = ACCOUNT_ALARMS.get(bil.AlarmKind(self.alarms[(meter.project_id, alarm_id)].kind))
                if state is not None:
                    out.add(state)
        return out

    def tariff_changes_of(self, account: Account) -> list[TariffChange]:
        """The account's tariff changes in effective order (superseded ones included)."""
        return self.account_tariff_changes.get((account.project_id, account.account_id), [])

    def tariff_at(self, account: Account, instant: datetime) -> str:
        """The tariff in force at ``instant`` by billing's rule (``AccountState.tariff_at``): the
        last change effective by then (of several at one instant, the last folded), else the
        opening tariff."""
        in_force = [c.tariff_id for c in self.tariff_changes_of(account) if c.effective <= instant]
        return in_force[-1] if in_force else account.opening_tariff_id

    def next_tariff_change(self, account: Account, instant: datetime) -> TariffChange | None:
        """The nearest change that takes effect after ``instant``, if any."""
        later = (c for c in self.tariff_changes_of(account) if c.effective > instant and not c.superseded)
        return next(later, None)

    def apply(self, e: Event) -> None:
        """Fold one fact (unknown kinds are ignored)."""
        self.applied += 1
        if e.project_id != iam.PLATFORM and e.project_id not in self.projects:
            self.projects[e.project_id] = ""
        handler = _HANDLERS.get(type(e))
        if handler is not None:
            handler(self, e)


def _registered(v: Views, e: acq.MeterRegistered) -> None:
    key = (e.project_id, e.meter_id)
    old = v.meters.get(key)
    meter = Meter(
        e.project_id, e.meter_id, e.address, e.protocol, e.model, e.medium.value, e.concentrator_id,
        e.bus_id, e.time, account_id=v.meter_accounts.get(key),
    )  # fmt: skip
    if old is not None:  # a re-registration keeps what other facts told us
        meter.attributes, meter.comm, meter.last_seen = old.attributes, old.comm, old.last_seen
        meter.relay = old.relay
        if old.concentrator_id != e.concentrator_id:
            _concentrator(v, e.project_id, old.concentrator_id).meters.discard(e.meter_id)
    else:
        meter.comm, meter.last_seen = v.early_comm.pop(key, ("unknown", None))
        meter.attributes = v.early_attributes.pop(key, {})
    v.meters[key] = meter
    _concentrator(v, e.project_id, e.concentrator_id).meters.add(e.meter_id)


def _concentrator(v: Views, project_id: str, concentrator_id: str) -> Concentrator:
    key = (project_id, concentrator_id)
    if key not in v.concentrators:
        v.concentrators[key] = Concentrator(project_id, concentrator_id)
    return v.concentrators[key]


def _updated(v: Views, e: acq.MeterUpdated) -> None:
    meter = v.meters.get((e.project_id, e.meter_id))
    if meter is not None:
        meter.attributes.update(e.changes)
    else:
        v.early_attributes.setdefault((e.project_id, e.meter_id), {}).update(e.changes)


def _comm(v: Views, e: Event) -> None:
    if isinstance(e, acq.MeterOnline | acq.MeterLostContact):
        status = "online" if isinstance(e, acq.MeterOnline) else "lost_contact"
        seen = e.since if isinstance(e, acq.MeterOnline) else e.last_seen
        meter = v.meters.get((e.project_id, e.meter_id))
        if meter is None:
            v.early_comm[(e.project_id, e.meter_id)] = (status, seen)
            return
        meter.comm, meter.last_seen = status, seen
    elif isinstance(e, acq.ConcentratorOnline | acq.ConcentratorOffline):
        conc = _concentrator(v, e.project_id, e.concentrator_id)
        conc.status = "online" if isinstance(e, acq.ConcentratorOnline) else "offline"
        conc.since = e.time


def _opened(v: Views, e: bil.AccountOpened) -> None:
    key = (e.project_id, e.account_id)
    if key in v.accounts:
        return
    v.accounts[key] = Account(
        e.project_id, e.account_id, e.mode.value, e.meter_ids, e.tariff_id, e.holder, e.phone,
        e.overdraft_fen, e.time, e.opened_by,
    )  # fmt: skip
    early = v.early_balances.pop(key, None)
    if early is not None:
        v.accounts[key].balance_fen, v.accounts[key].balance_at = early
    for meter_id in e.meter_ids:
        v.meter_accounts[(e.project_id, meter_id)] = e.account_id
        meter = v.meters.get((e.project_id, meter_id))
        if meter is not None:
            meter.account_id = e.account_id


def _money(v: Views, e: Event) -> None:
    if e.event_id in v.money:
        return
    if isinstance(e, bil.RechargeAccepted):
        kind, amount = "recharge", e.amount_fen
        details = {"channel": e.channel, "payment_order_id": e.payment_order_id or ""}
    elif isinstance(e, bil.RefundAccepted):
        kind, amount, details = "refund", e.amount_fen, {"reason": e.reason}
    elif isinstance(e, bil.AllowanceAccepted):
        kind, amount, details = "allowance", e.amount_fen, {"period": e.period}
    elif isinstance(e, bil.ClearAccepted):
        kind, amount, details = "clear", 0, {"reason": e.reason}
    else:
        return
    money = v.money[e.event_id] = Money(
        e.project_id, e.event_id, kind, e.account_id, amount, e.idempotency_key,
        e.operator_id, e.time, details,
    )  # fmt: skip
    booked = v.early_booked.pop(e.event_id, None)
    if booked is not None and booked[0] == e.account_id:
        money.balance_fen, money.applied_at = booked[1], booked[2]


_MONEY_REASONS = frozenset({"recharge", "refund", "clear", "allowance"})


def _balance(v: Views, e: bil.BalanceChanged) -> None:
    key = (e.project_id, e.account_id)
    account = v.accounts.get(key)
    if account is not None:  # one account's balance changes arrive in order on its partition
        account.balance_fen, account.balance_at = e.balance_fen, e.time
    else:
        v.early_balances[key] = (e.balance_fen, e.time)
    money = v.money.get(e.causation_id or "")
    if money is not None and money.account_id == e.account_id:
        money.balance_fen, money.applied_at = e.balance_fen, e.time
    elif money is None and e.causation_id and e.reason in _MONEY_REASONS:
        v.early_booked[e.causation_id] = (e.account_id, e.balance_fen, e.time)


def _tariff_changed(v: Views, e: bil.AccountTariffChanged) -> None:
    # kept whether or not the account is known yet: its opening may be folded later
    if e.event_id in v.tariff_changes:
        return
    change = TariffChange(
        e.project_id, e.event_id, e.account_id, e.tariff_id, e.effective_from, e.effective, e.time,
        e.operator_id, e.reason,
    )  # fmt: skip
    history = v.account_tariff_changes.setdefault((e.project_id, e.account_id), [])
    for earlier in history:
        if earlier.effective == change.effective:
            earlier.superseded = True
    bisect.insort_right(history, change, key=lambda c: c.effective)
    v.tariff_changes[e.event_id] = change


def _tariff(v: Views, e: bil.TariffPublished) -> None:
    key = (e.project_id, e.tariff_id)
    v.tariffs.setdefault(key, Tariff(e.project_id, e.tariff_id)).versions[e.version] = e


def _alarm(v: Views, e: Event) -> None:
    if isinstance(e, bil.AlarmRaised):
        key = (e.project_id, e.alarm_id)
        if key not in v.alarms:
            v.alarms[key] = Alarm(
                e.project_id, e.alarm_id, e.subject_id, e.kind.value, e.severity, e.message, e.time
            )
            v.active_alarms.setdefault((e.project_id, e.subject_id), set()).add(e.alarm_id)
    elif isinstance(e, bil.AlarmCleared):
        alarm = v.alarms.get((e.project_id, e.alarm_id))
        if alarm is not None:
            alarm.cleared_at = alarm.cleared_at or e.time
            v.active_alarms.get((e.project_id, alarm.subject_id), set()).discard(e.alarm_id)


def _subscription(v: Views, e: nfy.SubscriptionSet) -> None:
    # the latest wins, in log order: one account's settings share a partition (key: the account)
    v.subscriptions[(e.project_id, e.account_id)] = e
    v.subscription_ids.add(e.event_id)


def _iam(v: Views, e: Event) -> None:
    if isinstance(e, iam.ProjectCreated):
        v.projects[e.subject_id] = e.name
    elif isinstance(e, iam.UserCreated):
        if e.subject_id in v.users or e.username in v.usernames:
            return  # usernames are unique: the first creation wins on every replica
        v.users[e.subject_id] = User(
            e.subject_id,
            e.username,
            e.password_hash,
            e.roles,
            e.project_ids,
            e.all_projects,
            e.time,
            e.account_ids,
        )
        v.usernames[e.username] = e.subject_id
    elif isinstance(e, iam.LoginRecorded):
        if e.event_id not in v.login_ids:
            if len(v.logins) == v.logins.maxlen:
                v.login_ids.discard(v.logins[0].event_id)
            v.logins.append(e)
            v.login_ids.add(e.event_id)
    elif isinstance(e, iam.ApiKeyIssued):
        v.keys.setdefault(
            e.subject_id,
            ApiKey(e.subject_id, e.name, e.secret_sha256, e.roles, e.project_ids, e.all_projects, e.time),
        )
    elif isinstance(e, iam.ApiKeyRevoked) and e.subject_id in v.keys:
        v.keys[e.subject_id].revoked = True
    elif isinstance(e, iam.WebhookSubscribed):
        v.webhooks.setdefault(e.subject_id, Webhook(
            e.subject_id, e.project_ids, e.event_types, e.url, e.secret_sealed, e.created_by, e.time,
        ))  # fmt: skip
    elif isinstance(e, iam.WebhookUnsubscribed) and e.subject_id in v.webhooks:
        v.webhooks[e.subject_id].active = False
    else:
        _user_change(v, e)


def _user_change(v: Views, e: Event) -> None:
    user = v.users.get(e.subject_id)
    if user is None:
        return
    if isinstance(e, iam.UserDisabled):
        user.disabled = True
    elif isinstance(e, iam.UserEnabled):
        user.disabled = False
    elif isinstance(e, iam.PasswordChanged):
        user.password_hash = e.password_hash
    elif isinstance(e, iam.UserAccessChanged):
        user.roles, user.project_ids, user.all_projects = e.roles, e.project_ids, e.all_projects
        user.account_ids = e.account_ids


_HANDLERS: dict[type[Event], Any] = {
    acq.MeterRegistered: _registered,
    acq.MeterUpdated: _updated,
    acq.MeterOnline: _comm,
    acq.MeterLostContact: _comm,
    acq.ConcentratorOnline: _comm,
    acq.ConcentratorOffline: _comm,
    bil.AccountOpened: _opened,
    bil.RechargeAccepted: _money,
    bil.RefundAccepted: _money,
    bil.AllowanceAccepted: _money,
    bil.ClearAccepted: _money,
    bil.BalanceChanged: _balance,
    bil.AccountTariffChanged: _tariff_changed,
    bil.TariffPublished: _tariff,
    bil.AlarmRaised: _alarm,
    bil.AlarmCleared: _alarm,
    **dict.fromkeys(
        (ctl.CommandRequested, ctl.CommandSent, ctl.CommandFailed, ctl.CommandAcknowledged, ctl.CommandTimedOut,
         ctl.CommandAbandoned),
        fold_command,
    ),
    nfy.SubscriptionSet: _subscription,
    **dict.fromkeys(
        (iam.ProjectCreated, iam.UserCreated, iam.LoginRecorded, iam.ApiKeyIssued, iam.ApiKeyRevoked,
         iam.UserDisabled, iam.UserEnabled, iam.PasswordChanged, iam.UserAccessChanged, iam.WebhookSubscribed,
         iam.WebhookUnsubscribed),
        _iam,
    ),
}  # fmt: skip
