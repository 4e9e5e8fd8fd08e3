"""Finding one thing by id among the projects a request may see, and turning views into bodies.

An id that exists only in a project outside the scope is answered exactly like an id that does
not exist (404), so a caller cannot probe other tenants.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from services.api.command_status import Command
from services.api.problems import Problem, not_found
from services.api.records import Account, Alarm, Meter, Money, ProjectTable, Tariff, TariffChange
from services.api.schemas import (
    AccountOut,
    AlarmOut,
    BalanceOut,
    CommandOut,
    MeterOut,
    MoneyOut,
    NotificationOut,
    TariffChangeOut,
    TariffOut,
    TariffVersionOut,
)
from services.api.security import Scope
from services.api.sendlog import Send
from services.api.views import Views

V = TypeVar("V")


def find(scope: Scope, table: ProjectTable[V], ident: str, what: str) -> V:
    """The one ``(project, ident)`` entry of ``table`` in scope; 404 if none, 409 if ambiguous."""
    hits = [table[(p, ident)] for p in scope.project_ids if (p, ident) in table]
    if not hits:
        raise not_found(what, ident)
    if len(hits) > 1:
        raise Problem(409, f"{what} {ident!r} exists in several of your projects: pass project_id")
    return hits[0]


def in_scope(scope: Scope, table: ProjectTable[V]) -> list[V]:
    """Every entry of ``table`` whose project is in scope: by project, then in order of arrival
    (stable, so offset pagination does not shift as new entries append)."""
    return [v for p in scope.project_ids for v in table.by_project.get(p, {}).values()]


def find_account(scope: Scope, views: Views, account_id: str) -> Account:
    """An account in scope that the principal may see (a consumer: only its own)."""
    if not scope.owns(account_id):
        raise not_found("account", account_id)
    return find(scope, views.accounts, account_id, "account")


def accounts_in_scope(scope: Scope, views: Views) -> list[Account]:
    return [a for a in in_scope(scope, views.accounts) if scope.owns(a.account_id)]


def find_meter(scope: Scope, views: Views, meter_id: str) -> Meter:
    """A meter in scope; a consumer sees only the meters of its own accounts."""
    meter = find(scope, views.meters, meter_id, "meter")
    if not scope.owns(meter.account_id):
        raise not_found("meter", meter_id)
    return meter


def meter_out(views: Views, m: Meter) -> MeterOut:
    return MeterOut(
        project_id=m.project_id, meter_id=m.meter_id, address=m.address, protocol=m.protocol, model=m.model,
        medium=m.medium, concentrator_id=m.concentrator_id, bus_id=m.bus_id, account_id=m.account_id,
        states=sorted(views.states(m)), comm=m.comm, relay=m.relay, last_seen=m.last_seen,
        attributes=dict(m.attributes),
    )  # fmt: skip


def account_out(views: Views, a: Account, now: datetime) -> AccountOut:
    """The account as of ``now``: its tariff in force then and the next change after it."""
    upcoming = views.next_tariff_change(a, now)
    return AccountOut(
        project_id=a.project_id, account_id=a.account_id, mode=a.mode, meter_ids=list(a.meter_ids),
        tariff_id=views.tariff_at(a, now), opening_tariff_id=a.opening_tariff_id,
        next_tariff_change=tariff_change_out(upcoming) if upcoming else None, holder=a.holder, phone=a.phone,
        overdraft_fen=a.overdraft_fen, opened_at=a.opened_at, opened_by=a.opened_by, balance_fen=a.balance_fen,
    )  # fmt: skip


def tariff_change_out(c: TariffChange) -> TariffChangeOut:
    return TariffChangeOut(
        id=c.event_id, project_id=c.project_id, account_id=c.account_id, tariff_id=c.tariff_id,
        effective_from=c.effective_from, effective_at=c.effective, recorded_at=c.recorded_at,
        operator_id=c.operator_id, reason=c.reason, superseded=c.superseded,
    )  # fmt: skip


def balance_out(a: Account) -> BalanceOut:
    return BalanceOut(
        project_id=a.project_id, account_id=a.account_id, balance_fen=a.balance_fen, updated_at=a.balance_at
    )


def money_out(m: Money) -> MoneyOut:
    return MoneyOut(
        id=m.event_id, project_id=m.project_id, account_id=m.account_id, kind=m.kind, amount_fen=m.amount_fen,
        idempotency_key=m.idempotency_key, operator_id=m.operator_id, time=m.time, details=dict(m.details),
        status="applied" if m.balance_fen is not None else "accepted", balance_fen=m.balance_fen,
    )  # fmt: skip


def tariff_out(t: Tariff) -> TariffOut:
    versions = [
        TariffVersionOut(version=v.version, name=v.name, effective_from=v.effective_from,
                         definition=dict(v.definition), published_at=v.time)
        for _, v in sorted(t.versions.items())
    ]  # fmt: skip
    return TariffOut(project_id=t.project_id, tariff_id=t.tariff_id, versions=versions)


def command_out(c: Command) -> CommandOut:
    return CommandOut(
        project_id=c.project_id, command_id=c.command_id, meter_id=c.meter_id, action=c.action,
        requested_by=c.requested_by, reason=c.reason, params=dict(c.params), requested_at=c.requested_at,
        status=c.status, attempts=c.attempts, detail=c.detail, updated_at=c.updated_at, final=c.final,
        ended_at=c.ended_at,
    )  # fmt: skip


def alarm_out(a: Alarm) -> AlarmOut:
    return AlarmOut(
        project_id=a.project_id, alarm_id=a.alarm_id, subject_id=a.subject_id, kind=a.kind, severity=a.severity,
        message=a.message, raised_at=a.raised_at, cleared_at=a.cleared_at, active=a.cleared_at is None,
    )  # fmt: skip


def send_out(s: Send) -> NotificationOut:
    return NotificationOut(
        project_id=s.project_id, notification_id=s.notification_id, account_id=s.account_id or None,
        channel=s.channel, recipient=s.recipient, template=s.template, status=s.status, final=s.final,
        attempts=s.attempts, provider=s.provider or None, provider_message_id=s.provider_message_id or None,
        last_error=s.last_error or None, suppressed_reason=s.suppressed_reason or None,
        deferred_reason=s.deferred_reason, deferred_until=s.deferred_until,
        requested_at=s.requested_at, updated_at=s.updated_at,
    )  # fmt: skip
