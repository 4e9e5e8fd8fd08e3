"""Allowance plans (MISSION.md B3, 基础金额 on a calendar): which allowances are due, as a pure fold.

A plan is the latest ``AllowancePlanSet`` of a plan id (log order; a redelivered older fact is
dropped by id). :func:`due` lists, at an instant, the ``AllowanceAccepted`` facts the active plans
call for and the books do not hold yet. Billing emits them onto mf.billing, its own input, and
folds them like any allowance when they come back, so the log records every grant and a replay
reproduces it without a clock.

Rules, each independent of when (or how often) :func:`due` is asked:

- An account is granted by a plan when it is prepaid, in the plan's project, among the plan's
  ``account_ids`` (if any), and on one of its ``tariff_ids`` (if any) *at the grant instant*.
- Periods are granted from the one under way at ``since`` = the later of the plan's effective
  time and the account's opening (so an account opened mid-period gets the current period) up to
  the one under way now. The grant instant — the allowance's ``time`` — is the later of the period
  start and ``since``.
- One allowance per account and period label (the ledger's rule): a period the account already
  holds (granted by an operator or another plan) is skipped; where two active plans grant the same
  label to one account, the plan id first in order wins.
- Ids derive from (project, plan id, account, period): asked again — after a crash, a restart, or
  before the first grant came back — :func:`due` gives the same facts, which the ledger drops.
- Setting a plan again (new amount, filters or calendar) restarts it from the new fact's effective
  time: allowances granted stay as granted, the period under way is granted again only if its
  label changed (another calendar).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from libs.events.base import event_id_for
from libs.events.billing import AllowanceAccepted, AllowanceCycle, AllowancePlanSet, BillingMode
from services.billing.domain.ledger import AccountState

Key = tuple[str, str]  # (project id, plan or account id)
NEVER = datetime.max.replace(tzinfo=UTC)
MAX_PERIODS = 1200  # per plan and account in one evaluation: a century of months


@dataclass(frozen=True)
class Plan:
    """The fact in force for one plan id, and the ids of every fact of that plan folded."""

    fact: AllowancePlanSet
    seen: frozenset[str]


Plans = Mapping[Key, Plan]


@dataclass(frozen=True)
class Period:
    """One period of a plan's calendar: ``[start, end)``, local midnights of the plan's zone."""

    label: str
    start: datetime
    end: datetime


def apply(plans: Plans, fact: AllowancePlanSet) -> dict[Key, Plan]:
    """The plans after ``fact`` (a new dict; ``plans`` is not changed). Idempotent by event id."""
    key = (fact.project_id, fact.plan_id)
    known = plans.get(key)
    if known is not None and fact.event_id in known.seen:
        return dict(plans)
    seen = known.seen if known is not None else frozenset()
    return {**plans, key: Plan(fact, seen | {fact.event_id})}


def period_at(plan: AllowancePlanSet, instant: datetime) -> Period:
    """The period of ``plan``'s calendar under way at ``instant`` (its start included)."""
    zone = ZoneInfo(plan.tz)
    local = instant.astimezone(zone)
    if plan.cycle is AllowanceCycle.MONTHLY:
        start = datetime(local.year, local.month, 1, tzinfo=zone)
        end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=zone)
        return Period(f"{start:%Y-%m}", start, end)
    starts = [(year, i, _midnight(year, text, zone)) for year in (local.year - 1, local.year)
              for i, text in enumerate(plan.starts, 1)]  # fmt: skip
    year, index, start = max((s for s in starts if s[2] <= local), key=lambda s: s[2])
    if index < len(plan.starts):
        end = _midnight(year, plan.starts[index], zone)
    else:
        end = _midnight(year + 1, plan.starts[0], zone)
    return Period(f"{year:04d}-S{index}", start, end)


def periods(plan: AllowancePlanSet, since: datetime, now: datetime) -> Iterator[Period]:
    """The periods under way at some instant of ``[since, now]``, in order."""
    period = period_at(plan, since)
    for _ in range(MAX_PERIODS):
        if period.start > now:
            return
        yield period
        period = period_at(plan, period.end)


def due(plans: Plans, accounts: Mapping[Key, AccountState], now: datetime) -> list[AllowanceAccepted]:
    """Every allowance the active plans call for at ``now`` that ``accounts`` do not hold yet."""
    active = sorted(
        (p.fact for p in plans.values() if p.fact.active and p.fact.effective <= now),
        key=lambda f: (f.project_id, f.plan_id),
    )
    if not active:
        return []
    prepaid: dict[str, list[AccountState]] = {}
    for account in accounts.values():
        if account.mode is BillingMode.PREPAID:
            prepaid.setdefault(account.project_id, []).append(account)
    out: list[AllowanceAccepted] = []
    granted: set[tuple[str, str, str]] = set()  # (project, account, period) granted just now
    for plan in active:
        if plan.account_ids:
            listed = (accounts.get((plan.project_id, a)) for a in dict.fromkeys(plan.account_ids))
            chosen = [a for a in listed if a is not None and a.mode is BillingMode.PREPAID]
        else:
            chosen = prepaid.get(plan.project_id, [])
        # the calendar once per plan, not per account: most accounts opened before the plan
        calendar = list(periods(plan, plan.effective, now))
        ends = [period.end for period in calendar]
        effective = plan.effective
        for account in chosen:
            if account.opened_at <= effective:
                since, todo = effective, calendar
            elif account.opened_at <= now:
                since = account.opened_at
                todo = calendar[bisect.bisect_right(ends, since) :]
            else:
                continue  # opened after now (a clock behind the facts): nothing began since
            for period in todo:
                if period.label in account.allowance_periods:
                    continue
                at = max(period.start, since)
                if plan.tariff_ids and account.tariff_at(at) not in plan.tariff_ids:
                    continue
                key = (account.project_id, account.account_id, period.label)
                if key in granted:
                    continue
                granted.add(key)
                out.append(grant(plan, account.account_id, period.label, at))
    return out


def grant(plan: AllowancePlanSet, account_id: str, period: str, at: datetime) -> AllowanceAccepted:
    """The allowance ``plan`` grants ``account_id`` for ``period``, due at ``at``."""
    p = plan.project_id
    return AllowanceAccepted(
        event_id=event_id_for(p, "allowance_plan", plan.plan_id, account_id, period),
        project_id=p,
        subject_id=account_id,
        time=at,
        causation_id=plan.event_id,
        correlation_id=plan.correlation_id or plan.event_id,
        account_id=account_id,
        amount_fen=plan.amount_fen,
        idempotency_key=f"plan:{plan.plan_id}:{period}",
        operator_id=plan.operator_id,
        period=period,
    )


def next_due(plans: Plans, now: datetime) -> datetime:
    """The first instant after ``now`` at which a plan can call for something new without any new
    fact (an effective time or a period start); :data:`NEVER` without active plans."""
    first = NEVER
    for p in plans.values():
        plan = p.fact
        if not plan.active:
            continue
        first = min(first, plan.effective if plan.effective > now else period_at(plan, now).end)
    return first


def _midnight(year: int, month_day: str, zone: ZoneInfo) -> datetime:
    month, day = month_day.split("-")
    return datetime(year, int(month), int(day), tzinfo=zone)
