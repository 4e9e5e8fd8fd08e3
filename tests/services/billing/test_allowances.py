"""Allowance plans: calendars and their labels, who is granted which periods, and that asking again
(or replaying) never grants twice."""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events import AccountOpened, AccountTariffChanged, AllowanceAccepted, AllowancePlanSet, Codec
from libs.events.base import Event
from libs.events.billing import AllowanceCycle, BillingMode
from services.billing.domain import allowances
from services.billing.domain.allowances import Plan, due, next_due, period_at, periods
from services.billing.domain.books import Books
from services.billing.worker import BillingState

SH = ZoneInfo("Asia/Shanghai")
P = "campus"
SEMESTERS = ("09-01", "02-20")


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc, arg-type]


def plan(
    plan_id: str = "quota",
    *,
    cycle: AllowanceCycle = AllowanceCycle.YEARLY,
    starts: tuple[str, ...] = SEMESTERS,
    when: datetime = sh(2026, 8, 15),
    n: int = 1,
    **fields: Any,
) -> AllowancePlanSet:
    return AllowancePlanSet(**{
        "event_id": f"plan-{plan_id}-{n}", "project_id": P, "subject_id": plan_id, "time": when,
        "plan_id": plan_id, "amount_fen": 3000, "cycle": cycle,
        "starts": starts if cycle is AllowanceCycle.YEARLY else (), "tz": "Asia/Shanghai",
        "operator_id": "finance", **fields,
    })  # fmt: skip


def opened(
    account_id: str,
    when: datetime = sh(2026, 3, 1),
    tariff: str = "t1",
    mode: BillingMode = BillingMode.PREPAID,
) -> AccountOpened:
    return AccountOpened(
        event_id=f"open-{account_id}", project_id=P, subject_id=account_id, time=when, account_id=account_id,
        mode=mode, meter_ids=(f"m-{account_id}",), tariff_id=tariff, holder="学生", opened_by="op",
    )  # fmt: skip


def folded(*facts: Event) -> tuple[dict[allowances.Key, Plan], Books]:
    plans: dict[allowances.Key, Plan] = {}
    books = Books()
    for fact in facts:
        if isinstance(fact, AllowancePlanSet):
            plans = allowances.apply(plans, fact)
        else:
            books.handle(fact)
    return plans, books


def granted(grants: list[AllowanceAccepted]) -> set[tuple[str, str]]:
    return {(g.account_id, g.period) for g in grants}


# --- calendars ----------------------------------------------------------------------------------


def test_semesters_are_labelled_by_their_start_year_and_place_in_the_starts() -> None:
    p = plan()
    assert p.starts == ("02-20", "09-01")  # kept sorted: S1 is the one starting first in a year
    autumn = period_at(p, sh(2027, 1, 10))
    assert (autumn.label, autumn.start, autumn.end) == ("2026-S2", sh(2026, 9, 1), sh(2027, 2, 20))
    assert period_at(p, sh(2027, 2, 19, 23, 59, 59)).label == "2026-S2"
    assert period_at(p, sh(2027, 2, 20)).label == "2027-S1"  # a start belongs to the period it opens
    assert period_at(p, sh(2027, 8, 31, 23, 59)).label == "2027-S1"
    assert period_at(p, sh(2027, 9, 1)).label == "2027-S2"


def test_period_starts_are_local_midnights_of_the_plans_zone() -> None:
    instant = datetime(2027, 2, 19, 16, tzinfo=UTC)  # 2027-02-20 00:00 in Shanghai
    assert period_at(plan(), instant).label == "2027-S1"
    assert period_at(plan(tz="UTC"), instant).label == "2026-S2"
    assert period_at(plan(tz="UTC"), instant + timedelta(hours=8)).label == "2027-S1"
    month = period_at(plan(cycle=AllowanceCycle.MONTHLY, tz="America/New_York"), instant)
    assert (month.label, month.start.utcoffset()) == ("2027-02", timedelta(hours=-5))


def test_months_roll_over_the_year_and_one_start_makes_a_school_year() -> None:
    monthly = plan(cycle=AllowanceCycle.MONTHLY)
    december = period_at(monthly, sh(2026, 12, 31, 23, 59))
    assert (december.label, december.end) == ("2026-12", sh(2027, 1, 1))
    assert [p.label for p in periods(monthly, sh(2026, 11, 20), sh(2027, 2, 1))] == [
        "2026-11", "2026-12", "2027-01", "2027-02",
    ]  # fmt: skip
    yearly = plan(starts=("09-01",))
    assert period_at(yearly, sh(2027, 6, 30)).label == "2026-S1"
    assert period_at(yearly, sh(2027, 6, 30)).end == sh(2027, 9, 1)


def test_a_plan_refuses_a_calendar_it_could_not_keep() -> None:
    with pytest.raises(ValueError, match="MM-DD"):
        plan(starts=("02-29",))  # not a day of every year
    with pytest.raises(ValueError, match="needs one or more starts"):
        plan(starts=())
    with pytest.raises(ValueError, match="takes no starts"):
        AllowancePlanSet(project_id=P, subject_id="x", plan_id="x", amount_fen=1, operator_id="o",
                         cycle=AllowanceCycle.MONTHLY, starts=("01-01",))  # fmt: skip
    with pytest.raises(ValueError, match="unknown timezone"):
        plan(tz="Moon/Base")


# --- who gets what ------------------------------------------------------------------------------


def test_accounts_get_the_period_under_way_when_the_plan_starts_then_each_new_one() -> None:
    plans, books = folded(opened("a1"), opened("a2"), plan())  # set 2026-08-15, in 2026-S1
    assert granted(due(plans, books.accounts, sh(2026, 8, 15))) == {("a1", "2026-S1"), ("a2", "2026-S1")}
    later = due(plans, books.accounts, sh(2027, 3, 1))
    assert granted(later) == {(a, s) for a in ("a1", "a2") for s in ("2026-S1", "2026-S2", "2027-S1")}
    first = next(g for g in later if (g.account_id, g.period) == ("a1", "2026-S2"))
    assert (first.time, first.amount_fen, first.operator_id) == (sh(2026, 9, 1), 3000, "finance")
    assert first.idempotency_key == "plan:quota:2026-S2" and first.causation_id == "plan-quota-1"


def test_an_account_opened_mid_period_gets_that_period_from_its_opening() -> None:
    plans, books = folded(plan(), opened("late", when=sh(2026, 10, 9, 14)))
    (grant,) = due(plans, books.accounts, sh(2026, 10, 9, 15))
    assert (grant.period, grant.time) == ("2026-S2", sh(2026, 10, 9, 14))
    assert due(plans, books.accounts, sh(2026, 10, 9, 13)) == []  # not open yet at that instant


def test_filters_postpaid_accounts_and_other_projects() -> None:
    other = opened("x1").model_copy(update={"project_id": "elsewhere", "event_id": "open-x1-elsewhere"})
    facts = [
        opened("a1", tariff="dorm"), opened("a2", tariff="office"), opened("a3", tariff="dorm"),
        opened("post", tariff="dorm", mode=BillingMode.POSTPAID), other,
    ]  # fmt: skip
    now = sh(2026, 8, 16)
    plans, books = folded(*facts, plan(tariff_ids=("dorm",)))
    assert granted(due(plans, books.accounts, now)) == {("a1", "2026-S1"), ("a3", "2026-S1")}
    plans, books = folded(*facts, plan(account_ids=("a2", "a3", "post", "nobody")))
    assert granted(due(plans, books.accounts, now)) == {("a2", "2026-S1"), ("a3", "2026-S1")}
    plans, books = folded(*facts, plan(tariff_ids=("dorm",), account_ids=("a2", "a3")))  # both must hold
    assert granted(due(plans, books.accounts, now)) == {("a3", "2026-S1")}


def test_the_tariff_filter_looks_at_the_tariff_in_force_when_the_period_begins() -> None:
    move = AccountTariffChanged(
        event_id="chg-a1", project_id=P, subject_id="a1", time=sh(2026, 8, 20), account_id="a1",
        tariff_id="dorm", effective_from=sh(2026, 10, 1), operator_id="op",
    )  # fmt: skip
    plans, books = folded(opened("a1", tariff="office"), move, plan(tariff_ids=("dorm",)))
    assert due(plans, books.accounts, sh(2026, 12, 1)) == []  # office at 2026-08-15 and 2026-09-01
    assert granted(due(plans, books.accounts, sh(2027, 2, 20))) == {("a1", "2027-S1")}


def test_a_plan_effective_later_grants_nothing_before_then() -> None:
    plans, books = folded(opened("a1"), plan(effective_from=sh(2027, 2, 20)))
    assert due(plans, books.accounts, sh(2027, 2, 19, 23)) == []
    assert granted(due(plans, books.accounts, sh(2027, 2, 20))) == {("a1", "2027-S1")}
    assert next_due(plans, sh(2026, 9, 1)) == sh(2027, 2, 20)
    assert next_due(plans, sh(2027, 3, 1)) == sh(2027, 9, 1)


def test_an_inactive_plan_stops_granting_and_a_backdated_effective_time_is_read_as_set_time() -> None:
    plans, books = folded(opened("a1"), plan(effective_from=sh(2020, 1, 1)))
    assert granted(due(plans, books.accounts, sh(2026, 8, 16))) == {("a1", "2026-S1")}
    plans, books = folded(opened("a1"), plan(), plan(active=False, n=2, when=sh(2026, 8, 20)))
    assert due(plans, books.accounts, sh(2027, 3, 1)) == []
    assert next_due(plans, sh(2027, 3, 1)) == allowances.NEVER


def test_one_allowance_per_account_and_period_whoever_grants_it() -> None:
    manual = AllowanceAccepted(
        event_id="manual", project_id=P, subject_id="a1", time=sh(2026, 8, 1), account_id="a1", amount_fen=500,
        idempotency_key="desk-1", operator_id="op", period="2026-S1",
    )  # fmt: skip
    plans, books = folded(opened("a1"), opened("a2"), manual, plan("b-extra"), plan("a-base"))
    grants = due(plans, books.accounts, sh(2026, 8, 16))
    assert granted(grants) == {("a2", "2026-S1")}  # a1 holds 2026-S1 already
    assert {g.idempotency_key for g in grants} == {"plan:a-base:2026-S1"}  # first plan id wins


# --- asked again --------------------------------------------------------------------------------


def test_asking_again_gives_the_same_facts_and_nothing_once_they_are_folded() -> None:
    plans, books = folded(opened("a1"), opened("a2"), plan(cycle=AllowanceCycle.MONTHLY))
    first = due(plans, books.accounts, sh(2026, 11, 2))
    assert len(first) == 8  # 2026-08 .. 2026-11 for two accounts
    assert due(plans, books.accounts, sh(2026, 11, 2)) == first  # same ids, times, everything
    codec = Codec()
    for grant in first:
        books.handle(codec.decode(codec.encode(grant))[0])
        books.handle(grant)  # a redelivery moves nothing
    assert due(plans, books.accounts, sh(2026, 11, 30)) == []
    assert {a.balance_fen for a in books.accounts.values()} == {4 * 3000}


def test_a_redelivered_older_plan_fact_does_not_undo_a_newer_one() -> None:
    v1, v2 = plan(amount_fen=1000), plan(amount_fen=2000, n=2, when=sh(2026, 8, 16))
    plans = allowances.apply(allowances.apply(allowances.apply({}, v1), v2), v1)
    assert plans[(P, "quota")].fact.amount_fen == 2000


@settings(max_examples=60, deadline=None)
@given(
    cycle=st.sampled_from(list(AllowanceCycle)),
    starts=st.lists(st.dates(date(2001, 1, 1), date(2001, 12, 31)), min_size=1, max_size=4),
    tz=st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York", "Pacific/Chatham"]),
    openings=st.lists(st.integers(0, 400 * 24), min_size=1, max_size=4),
    looks=st.lists(st.integers(0, 500 * 24), max_size=6),
)
def test_looking_often_or_once_grants_the_same(
    cycle: AllowanceCycle, starts: list[date], tz: str, openings: list[int], looks: list[int]
) -> None:
    base, end = sh(2026, 1, 1), sh(2026, 1, 1) + timedelta(hours=500 * 24)
    facts: list[Event] = [opened(f"a{i}", when=base + timedelta(hours=h)) for i, h in enumerate(openings)]
    the_plan = plan(cycle=cycle, starts=tuple(d.strftime("%m-%d") for d in starts), tz=tz, when=base)
    plans, often = folded(*facts, the_plan)
    _, once = folded(*facts)
    grants: list[AllowanceAccepted] = []
    for instant in [*(base + timedelta(hours=h) for h in sorted(looks)), end]:
        for grant in due(plans, often.accounts, instant):
            often.handle(grant)
            grants.append(grant)
    assert due(plans, often.accounts, end) == []
    assert sorted(grants, key=lambda g: g.event_id) == sorted(
        due(plans, once.accounts, end), key=lambda g: g.event_id
    )
    for grant in grants:  # every period from the one under way at the opening, each once
        assert period_at(the_plan, grant.time).label == grant.period


# --- the worker's part --------------------------------------------------------------------------


def test_the_worker_emits_what_is_due_once_until_it_comes_back_and_a_replay_repeats_nothing() -> None:
    log: list[Event] = [opened("a1"), opened("a2"), plan()]
    live = BillingState(clock=lambda: sh(2026, 9, 2).timestamp())
    for fact in log:
        live.fold(fact)
    grants = live.allowances_due(sh(2026, 9, 2))
    assert granted(grants) == {(a, s) for a in ("a1", "a2") for s in ("2026-S1", "2026-S2")}
    assert live.allowances_due(sh(2026, 9, 2)) == []  # emitted, not back yet: not again
    assert live.tick(0.0) == []  # the injected clock, not the processor's time
    snapshot = live.snapshot(0)()
    log += grants  # they come back through mf.billing
    for grant in grants:
        live.fold(grant)
    assert live.pending == {}
    assert live.allowances_due(sh(2027, 2, 19)) == []

    restored = BillingState()  # from the snapshot taken before the grants came back
    restored.restore(0, snapshot)
    assert restored.plans == live.plans
    assert granted(restored.allowances_due(sh(2026, 9, 2))) == granted(grants)  # the same ids again…
    for fact in grants + grants:
        restored.fold(fact)  # …which the ledger takes once
    replayed = BillingState()
    for fact in log:
        replayed.fold(fact)
    balances = {k: a.balance_fen for k, a in live.books.accounts.items()}
    assert balances == {(P, "a1"): 6000, (P, "a2"): 6000}
    assert {k: a.balance_fen for k, a in restored.books.accounts.items()} == balances
    assert {k: a.balance_fen for k, a in replayed.books.accounts.items()} == balances
    assert replayed.allowances_due(sh(2026, 12, 1)) == []


def test_the_worker_looks_again_only_when_a_fact_or_a_new_period_asks_for_it() -> None:
    state = BillingState()
    for fact in (opened("a1"), plan()):
        state.fold(fact)
    for grant in state.allowances_due(sh(2026, 8, 16)):
        state.fold(grant)
    assert state.quiet_until == sh(2026, 9, 1)
    state.fold(opened("a2", when=sh(2026, 8, 20)))
    assert state.quiet_until < sh(2026, 8, 20)
    assert granted(state.allowances_due(sh(2026, 8, 21))) == {("a2", "2026-S1")}


async def test_after_a_restore_the_worker_holds_allowances_until_mf_billing_is_applied() -> None:
    from libs.stack.processor import Inbound

    ends = {"mf.billing-in:0": 3, "mf.billing-in:1": 0}

    async def end_offsets() -> dict[str, int]:
        return ends

    state = BillingState(clock=lambda: sh(2026, 9, 2).timestamp(), end_offsets=end_offsets)
    state.restore(0, None)
    codec = Codec()

    def record(offset: int, fact: Event) -> Inbound:
        return Inbound(0, "mf.billing-in", 0, offset, fact.key, codec.decode(codec.encode(fact)))

    state.handle([record(0, opened("a1")), record(1, plan())])
    await asyncio.sleep(0)  # the end offsets are read
    assert state.tick(0.0) == []  # offset 2 (a grant already in the log) is not applied yet
    (earlier,) = [g for g in due(state.plans, state.books.accounts, sh(2026, 9, 2)) if g.period == "2026-S1"]
    state.handle([record(2, earlier)])
    (out,) = state.tick(0.0)
    assert out.topic == "mf.billing"
    assert granted([e for e in codec.decode(out.value) if isinstance(e, AllowanceAccepted)]) == {
        ("a1", "2026-S2")
    }
    assert pickle.loads(state.snapshot(0)())[6] == {"mf.billing-in:0": 3}
