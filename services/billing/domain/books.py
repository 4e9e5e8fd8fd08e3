"""The billing books: routes every fact to the pure per-aggregate folds and collects what they emit.

``Books`` holds maps of *immutable* aggregate states (meters, accounts, tariff books) and
replaces an entry per event — the only mutation — so a handled event costs O(1) and a
consistent snapshot is a shallow :meth:`copy`. Replaying the same facts in the same order into
fresh books gives the same states and the same emitted facts (ids are derived, not random).

A fact whose fold raises leaves the books as they were: each branch computes its new entries
first (parsing a tariff, pricing a delta, the ledger's pure folds) and assigns them after. The one
exception is a failure after a reading or replacement is priced and its meter advanced — booking
its charge, a postpaid bill, freezes, the purchase check; no known input does it — which keeps
what was assigned before it (the meter and, once booked, the charge) and loses the outputs.

Outputs of billing itself (BalanceChanged, charges, alarms, bills, freezes) are ignored on
input: they are consequences, re-derived on replay, never causes. Postpaid bills and freezes
follow the rules of :mod:`.settlement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from libs.events.acquisition import MeterRegistered, MeterReplaced, Rate, ReadingRecorded
from libs.events.base import Event, event_id_for
from libs.events.billing import (
    AccountOpened,
    AccountTariffChanged,
    AlarmKind,
    AlarmRaised,
    AlarmThresholdsSet,
    AllowanceAccepted,
    BillingMode,
    ClearAccepted,
    RechargeAccepted,
    RefundAccepted,
    TariffPublished,
)
from libs.events.trusted import trusted
from services.billing.domain import ledger
from services.billing.domain.alarms import AlarmConfig, AlarmPolicy, evaluate
from services.billing.domain.consumption import (
    Anomaly,
    Delta,
    Ignored,
    MeterState,
    Outcome,
    apportion,
    observe,
    registered,
    replaced,
)
from services.billing.domain.evolve import evolve
from services.billing.domain.facts import AdjustmentAccepted, ChargeApplied, ChargeLine, Command
from services.billing.domain.pricing import Charge, Template, Window, price_delta, templates, window
from services.billing.domain.purchases import PurchaseWatch, reconcile
from services.billing.domain.settlement import (
    BillDraft,
    FreezeSchedule,
    freeze_points,
    frozen,
    next_point,
    period_of,
)
from services.billing.domain.tariff import TariffBook, TariffVersion

MONEY = (RechargeAccepted, RefundAccepted, ClearAccepted, AllowanceAccepted, AdjustmentAccepted)


Key = tuple[str, str]  # (project id, id): ids of meters, accounts and tariffs are per project


@dataclass
class Books:
    """Every map is keyed by (project id, id): two projects may use the same account, meter or
    tariff ids, and their books never mix."""

    alarm_config: AlarmConfig = field(default_factory=AlarmConfig)
    accounts: dict[Key, ledger.AccountState] = field(default_factory=dict)
    meters: dict[Key, MeterState] = field(default_factory=dict)
    tariffs: dict[Key, TariffBook] = field(default_factory=dict)
    meter_account: dict[Key, str] = field(default_factory=dict)  # meter -> its account's id
    purchases: dict[Key, PurchaseWatch] = field(default_factory=dict)
    freeze_schedule: FreezeSchedule = field(default_factory=FreezeSchedule)
    next_freeze: dict[Key, datetime] = field(default_factory=dict)  # meter -> next instant due
    drafts: dict[Key, dict[str, BillDraft]] = field(default_factory=dict)  # account -> month -> lines
    charged_period: dict[Key, str] = field(default_factory=dict)  # meter -> latest month charged
    # (project, account id) -> the account's thresholds; (project, "") -> the project's default
    thresholds: dict[Key, AlarmPolicy] = field(default_factory=dict)
    # a cache, not state: (project, tariff, the rates read besides the total) -> (the book it was
    # computed for, an uncut window, the line templates there)
    windows: dict[
        tuple[str, str, tuple[Rate, ...]], tuple[TariffBook, Window, tuple[Template, ...] | None]
    ] = field(default_factory=dict, compare=False, repr=False)

    def copy(self) -> Books:
        return Books(
            self.alarm_config,
            dict(self.accounts),
            dict(self.meters),
            dict(self.tariffs),
            dict(self.meter_account),
            dict(self.purchases),
            self.freeze_schedule,
            dict(self.next_freeze),
            {account: dict(months) for account, months in self.drafts.items()},
            dict(self.charged_period),
            dict(self.thresholds),
        )

    def decide(self, command: Command) -> list[Event]:
        return ledger.decide(self.accounts.get((command.project_id, command.account_id)), command)

    def account(self, project_id: str, account_id: str) -> ledger.AccountState:
        """One account's state (KeyError when it is not open)."""
        return self.accounts[(project_id, account_id)]

    def account_of(self, project_id: str, meter_id: str) -> ledger.AccountState | None:
        """The account a meter is billed to, if any."""
        account_id = self.meter_account.get((project_id, meter_id))
        return None if account_id is None else self.accounts[(project_id, account_id)]

    def handle(self, fact: Event) -> list[Event]:
        """Fold one fact; return the facts it causes (empty for unknown or duplicate input)."""
        if isinstance(fact, ReadingRecorded):
            key = (fact.project_id, fact.meter_id)
            before = self._meter(*key)
            balance_before = self.account_of(*key)
            meter, outcome = observe(before, fact)
            out = self._consumed(fact, outcome, balance_before, meter)
            if isinstance(outcome, Ignored) and outcome.reason not in ("baseline", "no_register"):
                return out  # a duplicate or stale reading says nothing new about purchases
            if balance_before is not None and before.last is not None and meter.last is not None:
                out += self._freezes(fact, before, meter, balance_before)
            return out + self._purchases(fact)
        if isinstance(fact, MeterReplaced):
            meter, outcome = replaced(self._meter(fact.project_id, fact.meter_id), fact)
            return self._consumed(fact, outcome, self.account_of(fact.project_id, fact.meter_id), meter)
        p = fact.project_id
        if isinstance(fact, MeterRegistered):
            self.meters[(p, fact.meter_id)] = registered(self.meters.get((p, fact.meter_id)), fact)
        elif isinstance(fact, TariffPublished):
            book = self.tariffs.get((p, fact.tariff_id)) or TariffBook(tariff_id=fact.tariff_id)
            self.tariffs[(p, fact.tariff_id)] = book.publish(TariffVersion.from_event(fact))
        elif isinstance(fact, AccountOpened):
            if (p, fact.account_id) not in self.accounts:
                self.accounts[(p, fact.account_id)] = ledger.opened(fact)
                self.meter_account.update({(p, m): fact.account_id for m in fact.meter_ids})
        elif isinstance(fact, AlarmThresholdsSet):
            return self._thresholds(fact)
        elif isinstance(fact, AccountTariffChanged):
            account = self.accounts.get((p, fact.account_id))
            if account is None:
                raise ledger.AccountNotFound(f"tariff change for unknown account {fact.account_id}")
            self.accounts[(p, fact.account_id)] = ledger.change_tariff(account, fact)
        elif isinstance(fact, MONEY):
            account = self.accounts.get((p, fact.account_id))
            if account is None:
                raise ledger.AccountNotFound(f"{type(fact).__name__} for unknown account {fact.account_id}")
            account, out = ledger.apply_money(account, fact, self.policy(account))
            self.accounts[(p, account.account_id)] = account
            return out
        return []

    def policy(self, account: ledger.AccountState) -> AlarmPolicy:
        """The account's thresholds: its own, else its project's, else the configuration's."""
        return (
            self.thresholds.get((account.project_id, account.account_id))
            or self.thresholds.get((account.project_id, ""))
            or self.alarm_config.policy(account.project_id, account.account_id)
        )

    def _thresholds(self, fact: AlarmThresholdsSet) -> list[Event]:
        """Record the thresholds and re-evaluate the alarms of the accounts they apply to now."""
        policy = AlarmPolicy(level1_fen=fact.level1_fen, level2_fen=fact.level2_fen)
        key = (fact.project_id, fact.account_id or "")
        self.thresholds[key] = policy
        if fact.account_id is not None:
            affected = [self.accounts[key]] if key in self.accounts else []
        else:
            affected = [a for a in self.accounts.values() if a.project_id == fact.project_id]
        out: list[Event] = []
        for account in affected:
            if account.mode is not BillingMode.PREPAID:
                continue
            active, emitted = evaluate(
                account.subject, account.alarms, account.balance_fen, fact, self.policy(account)
            )
            if emitted:
                self.accounts[(account.project_id, account.account_id)] = evolve(account, alarms=active)
                out += emitted
        return out

    def _meter(self, project_id: str, meter_id: str) -> MeterState:
        return self.meters.get((project_id, meter_id)) or MeterState(meter_id=meter_id)

    def _consumed(
        self,
        fact: ReadingRecorded | MeterReplaced,
        outcome: Outcome,
        account: ledger.AccountState | None,
        meter: MeterState,
    ) -> list[Event]:
        """``account``: the meter's account as it is before ``fact`` (None: not assigned);
        ``meter``: the meter after it, assigned once the delta is priced (a pricing that raises
        changes nothing; a failure after, settling or freezing, keeps meter and charge together)."""
        charge = self._price(account, outcome) if isinstance(outcome, Delta) and account is not None else None
        self.meters[(fact.project_id, fact.meter_id)] = meter
        if isinstance(outcome, Anomaly):
            return [_anomaly(fact, outcome)]
        if charge is None or not isinstance(outcome, Delta) or account is None:
            return []
        account_id = account.account_id
        if not charge.lines:
            return []
        applied = trusted(  # built from validated facts: no second validation on the hot path
            ChargeApplied,
            {
                "event_id": event_id_for(account.project_id, "charge", fact.event_id),
                "project_id": account.project_id,
                "subject_id": account_id,
                "sequence": 0,
                "time": fact.time,
                "causation_id": fact.event_id,
                "correlation_id": fact.correlation_id or fact.event_id,
                "account_id": account_id,
                "meter_id": fact.meter_id,
                "start": outcome.start,
                "end": outcome.end,
                "lines": charge.lines,
                "amount_fen": charge.amount_fen,
            },
        )
        account, out = ledger.apply_charge(account, applied, charge.tier_used, self.policy(account))
        self.accounts[(account.project_id, account_id)] = account
        if account.mode is BillingMode.POSTPAID:
            out += self._settle(account, applied)
        return out

    def _book(self, project_id: str, tariff_id: str) -> TariffBook:
        return self.tariffs.get((project_id, tariff_id)) or TariffBook(tariff_id=tariff_id)

    def _price(self, account: ledger.AccountState, delta: Delta) -> Charge:
        """Price ``delta`` under the account's tariffs; an interval that spans a tariff change
        is apportioned between them linearly in time (``consumption.apportion``)."""
        p = account.project_id
        cuts = account.tariff_cuts(delta.start, delta.end)
        if not cuts:
            book = self._book(p, account.tariff_at(delta.start))
            uncut, cached = self._window(p, book, delta)
            return price_delta(book, delta, account.tier_used, account.opened_at, uncut, cached)
        units = {Rate.TOTAL: delta.total, **delta.by_rate}
        lines: list[ChargeLine] = []
        used, uncharged = account.tier_used, Decimal(0)
        for seg in apportion(delta.start, delta.end, units, cuts):
            part = Delta(delta.meter_id, delta.cause_id, seg.start, seg.end, seg.units[Rate.TOTAL],
                         {r: u for r, u in seg.units.items() if r is not Rate.TOTAL})  # fmt: skip
            charge = price_delta(self._book(p, account.tariff_at(seg.start)), part, used, account.opened_at)
            lines += charge.lines
            used, uncharged = charge.tier_used, uncharged + charge.uncharged
        return Charge(tuple(lines), used, uncharged)

    def _window(
        self, project_id: str, book: TariffBook, delta: Delta
    ) -> tuple[Window, tuple[Template, ...] | None]:
        key = (project_id, book.tariff_id, tuple(delta.by_rate))
        cached = self.windows.get(key)
        if cached is None or cached[0] is not book or not cached[1][0] <= delta.start < cached[1][1]:
            cached = self.windows[key] = (book, window(book, delta), templates(book, delta))
        return cached[1], cached[2]

    def _settle(self, account: ledger.AccountState, charge: ChargeApplied) -> list[Event]:
        """Add the charge to its month's bill; issue the months every meter has moved past."""
        zone = ZoneInfo(self.freeze_schedule.timezone)
        period = period_of(charge.end, zone)
        p = account.project_id
        months = self.drafts.setdefault((p, account.account_id), {})
        months[period] = months.get(period, BillDraft()).add(charge)
        self.charged_period[(p, charge.meter_id)] = period
        reached = [self.charged_period.get((p, m)) for m in account.meter_ids]
        if None in reached:
            return []
        closed = min(p for p in reached if p is not None)
        out: list[Event] = []
        for month in sorted(m for m in months if m < closed):
            out.append(months.pop(month).issue(account.account_id, month, charge))
        return out

    def _freezes(
        self, fact: ReadingRecorded, before: MeterState, after: MeterState, account: ledger.AccountState
    ) -> list[Event]:
        """MeterFrozen for every freeze instant in (previous reading, this reading]."""
        assert before.last is not None and after.last is not None
        key = (fact.project_id, fact.meter_id)
        due = self.next_freeze.get(key) or next_point(self.freeze_schedule, before.last.time)
        if fact.time < due:
            self.next_freeze[key] = due
            return []
        out: list[Event] = []
        for kind, label, instant in freeze_points(self.freeze_schedule, before.last.time, fact.time):
            if instant < fact.time:  # registers and balance as they were before this reading
                out.append(frozen(account, before.last, kind, label, instant, fact))
            else:  # the reading falls on the instant: it is the frozen value
                now = self.accounts[(account.project_id, account.account_id)]
                out.append(frozen(now, after.last, kind, label, instant, fact))
        self.next_freeze[key] = next_point(self.freeze_schedule, fact.time)
        return out

    def _purchases(self, fact: ReadingRecorded) -> list[Event]:
        if fact.purchase_count is None or fact.frozen is not None:
            return []  # checked first: most meters keep no purchase count
        account = self.account_of(fact.project_id, fact.meter_id)
        if account is None:
            return []
        if account.mode is not BillingMode.PREPAID:
            return []
        key = (fact.project_id, fact.meter_id)
        watch, out = reconcile(self.purchases.get(key, PurchaseWatch()), account, fact)
        self.purchases[key] = watch
        return out


def _anomaly(fact: ReadingRecorded | MeterReplaced, outcome: Anomaly) -> AlarmRaised:
    alarm_id = event_id_for(fact.project_id, "alarm", fact.meter_id, "anomaly", fact.event_id)
    return AlarmRaised(
        event_id=event_id_for(fact.project_id, "alarm_raised", alarm_id),
        project_id=fact.project_id,
        subject_id=fact.meter_id,
        time=fact.time,
        causation_id=fact.event_id,
        correlation_id=fact.correlation_id or fact.event_id,
        alarm_id=alarm_id,
        kind=AlarmKind.CONSUMPTION_ANOMALY,
        severity=2,
        message=f"meter {fact.meter_id}: {outcome.reason} consumption, not charged",
        details={"reason": outcome.reason, **outcome.details},
    )
