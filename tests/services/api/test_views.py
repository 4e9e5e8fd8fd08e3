"""The read model's fold is independent of how the broker interleaves topics: any merge of the
per-topic streams (each kept in order, as Kafka keeps a partition) gives the same views — billing's
consequences (mf.ledger) may come before their causes (mf.billing)."""

from __future__ import annotations

import random

from libs.events import AccountOpened, BalanceChanged, Event, MeterUpdated, RechargeAccepted
from services.api.views import MeterState, Views
from tests.services.api.conftest import site


def _merge(events: list[Event], rng: random.Random) -> list[Event]:
    queues: dict[str, list[Event]] = {}
    for e in events:
        queues.setdefault(e.TOPIC, []).append(e)
    out: list[Event] = []
    while queues:
        topic = rng.choice(sorted(queues))
        out.append(queues[topic].pop(0))
        if not queues[topic]:
            del queues[topic]
    return out


def _summary(v: Views) -> dict[str, object]:
    return {
        "states": {k: sorted(v.states(m)) for k, m in v.meters.items()},
        "attributes": {k: m.attributes for k, m in v.meters.items()},
        "accounts": {k: (a.balance_fen, a.meter_ids) for k, a in v.accounts.items()},
        "commands": {k: c.status for k, c in v.commands.items()},
        "concentrators": {k: (c.status, sorted(c.meters)) for k, c in v.concentrators.items()},
    }


def test_any_interleaving_of_topics_gives_the_same_views() -> None:
    events = [
        *site("p1"),
        MeterUpdated(project_id="p1", subject_id="m1", meter_id="m1", changes={"building": "B2"}),
    ]
    expected = Views()
    for e in events:
        expected.apply(e)
    want = _summary(expected)
    assert want["states"] == {
        ("p1", "m0"): sorted({MeterState.ONLINE, MeterState.ARREARS}),
        ("p1", "m1"): sorted({MeterState.LOST_CONTACT, MeterState.UNINITIALISED}),
    }
    rng = random.Random(11)
    for _ in range(200):
        views = Views()
        for e in _merge(events, rng):
            views.apply(e)
        assert _summary(views) == want


def test_redelivered_facts_change_nothing() -> None:
    events = site("p1")
    once, twice = Views(), Views()
    for e in events:
        once.apply(e)
    for e in events + events:
        twice.apply(e)
    assert _summary(once) == _summary(twice)


def test_a_booking_folded_before_its_cause_is_kept_for_it() -> None:
    opened, *_ = [e for e in site("p1") if isinstance(e, AccountOpened)]
    recharge = RechargeAccepted(project_id="p1", subject_id="a0", account_id="a0", amount_fen=500,
                                idempotency_key="k1", operator_id="op", channel="cash")  # fmt: skip
    booked = BalanceChanged(project_id="p1", subject_id="a0", account_id="a0", delta_fen=500, balance_fen=500,
                            reason="recharge", causation_id=recharge.event_id)  # fmt: skip
    for order in ([opened, recharge, booked], [booked, recharge, opened], [recharge, booked, opened]):
        views = Views()
        for e in order:
            views.apply(e)
        assert views.accounts[("p1", "a0")].balance_fen == 500, order
        assert views.money[recharge.event_id].balance_fen == 500, order
        assert not views.early_balances and not views.early_booked
