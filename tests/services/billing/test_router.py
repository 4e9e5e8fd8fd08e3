"""Billing's router: every fact reaches the partition of mf.billing-in its account maps to, a
meter's facts wait for its binding, and books folded per partition give the oracle's balances
whatever order the router reads its inputs in."""

from __future__ import annotations

import random

import pytest

from libs.events import Codec, Event, partition_for
from libs.events.billing import AlarmThresholdsSet, AllowanceCycle, AllowancePlanSet, MeterBound
from libs.events.topics import BILLING_IN, BINDINGS, READINGS, REGISTRY_TOPIC
from libs.stack.processor import Inbound
from services.billing import router
from services.billing.domain import oracle
from services.billing.testing import scenario
from tests.services.billing import pipeline
from tests.services.billing.helpers import SINGLE, P, account, at, meter, reading, recharge, tariff

CODEC = Codec()


def inbound(group: int, topic: str, *facts: Event, offset: int = 0) -> Inbound:
    return Inbound(group, topic, 0, offset, None, [CODEC.decode(CODEC.encode(f))[0] for f in facts])


def decoded(outputs: list[router.Outbound]) -> dict[tuple[str, int], list[Event]]:
    out: dict[tuple[str, int], list[Event]] = {}
    for o in outputs:
        assert o.partition is not None
        out.setdefault((o.topic, o.partition), []).extend(CODEC.decode(o.value))
    return out


def bound(meter_id: str, account_id: str, when_hour: int, cause: str) -> MeterBound:
    return MeterBound(event_id=f"b-{cause}-{meter_id}", project_id=P, subject_id=meter_id, meter_id=meter_id,
                      account_id=account_id, causation_id=cause, time=at(2024, 1, 1, when_hour))  # fmt: skip


def test_the_meter_keyed_topics_share_one_partition_count() -> None:
    assert READINGS.partitions == REGISTRY_TOPIC.partitions == BINDINGS.partitions
    assert BILLING_IN.partitions >= 1


def test_an_opening_binds_each_of_its_meters_on_the_meters_partition_and_goes_to_its_accounts() -> None:
    routing = router.Router()
    opened = account(meters=("m1", "m2"))
    out = decoded(routing.handle([inbound(router.STATELESS, "mf.billing", opened)]))
    home = router.account_partition("a1")
    assert [e.event_id for e in out[("mf.billing-in", home)]] == [opened.event_id]
    for m in ("m1", "m2"):
        (binding,) = out[("mf.bindings", partition_for(m.encode(), BINDINGS.partitions))]
        assert isinstance(binding, MeterBound) and (binding.meter_id, binding.account_id) == (m, "a1")
        assert binding.causation_id == opened.event_id and binding.time == opened.time
    # the same opening again gives the same bindings (derived ids): a repeat downstream drops them
    again = decoded(routing.handle([inbound(router.STATELESS, "mf.billing", opened)]))
    assert [e.event_id for es in again.values() for e in es] == [
        e.event_id for es in out.values() for e in es
    ]


def test_reference_facts_go_to_every_partition_and_account_facts_to_their_accounts() -> None:
    routing = router.Router()
    plan = AllowancePlanSet(project_id=P, subject_id="plan", plan_id="plan", amount_fen=100,
                            cycle=AllowanceCycle.MONTHLY, operator_id="op")  # fmt: skip
    project_thresholds = AlarmThresholdsSet(project_id=P, subject_id=P, level1_fen=500, level2_fen=100,
                                            operator_id="op")  # fmt: skip
    own = AlarmThresholdsSet(project_id=P, subject_id="a1", account_id="a1", level1_fen=500, level2_fen=100,
                             operator_id="op")  # fmt: skip
    out = decoded(
        routing.handle([inbound(2 * router.STATELESS, "mf.tariffs", tariff(SINGLE))])
        + routing.handle(
            [inbound(router.STATELESS, "mf.billing", plan, project_thresholds, recharge(5, "k"), own)]
        )
    )
    home = router.account_partition("a1")
    for p in range(BILLING_IN.partitions):
        types = [type(e).__name__ for e in out[("mf.billing-in", p)]]
        expected = ["TariffPublished", "AllowancePlanSet", "AlarmThresholdsSet"]
        assert types == expected + (["RechargeAccepted", "AlarmThresholdsSet"] if p == home else [])


def test_a_meters_facts_wait_in_order_for_its_binding_then_go_to_its_accounts_partition() -> None:
    routing = router.Router()
    routing.restore(3, None)
    early = [meter("m1"), reading(at(2024, 1, 2), 10, "m1"), reading(at(2024, 1, 3), 12, "m1")]
    assert routing.handle([inbound(3, "mf.readings", *early)]) == []
    assert routing.waiting == 3
    out = decoded(routing.handle([inbound(3, "mf.bindings", bound("m1", "a1", 0, "open-a1"))]))
    assert [e.event_id for e in out[("mf.billing-in", router.account_partition("a1"))]] == [
        e.event_id for e in early
    ]
    later = reading(at(2024, 1, 4), 13, "m1")
    assert decoded(routing.handle([inbound(3, "mf.readings", later)])) == {
        ("mf.billing-in", router.account_partition("a1")): [later]
    }
    assert routing.waiting == 0


def accounts_on_two_partitions() -> tuple[str, str]:
    names = [f"acct-{i}" for i in range(50)]
    first = names[0]
    other = next(n for n in names if router.account_partition(n) != router.account_partition(first))
    return first, other


@pytest.mark.parametrize("order", ["older first", "newer first"])
def test_the_latest_opening_binds_a_meter_whatever_order_the_bindings_arrive_in(order: str) -> None:
    old_account, new_account = accounts_on_two_partitions()
    old, new = bound("m1", old_account, 0, "open-old"), bound("m1", new_account, 5, "open-new")
    routing = router.Router()
    routing.restore(0, None)
    for b in (old, new) if order == "older first" else (new, old):
        routing.handle([inbound(0, "mf.bindings", b)])
    out = decoded(routing.handle([inbound(0, "mf.readings", reading(at(2024, 1, 2), 1, "m1"))]))
    assert list(out) == [("mf.billing-in", router.account_partition(new_account))]


def test_a_meter_moved_to_another_partition_takes_its_registration_and_latest_replacement_along() -> None:
    old_account, new_account = accounts_on_two_partitions()
    routing = router.Router()
    routing.restore(0, None)
    routing.handle([inbound(0, "mf.bindings", bound("m1", old_account, 0, "open-old"))])
    registration = meter("m1")
    routing.handle(
        [inbound(0, "mf.registry", registration), inbound(0, "mf.readings", reading(at(2024, 1, 2), 1))]
    )
    out = decoded(routing.handle([inbound(0, "mf.bindings", bound("m1", new_account, 5, "open-new"))]))
    assert out == {("mf.billing-in", router.account_partition(new_account)): [registration]}


def test_the_routing_state_survives_a_snapshot() -> None:
    routing = router.Router()
    routing.restore(0, None)
    routing.handle([inbound(0, "mf.readings", meter("m1"), reading(at(2024, 1, 2), 1))])
    blob = routing.snapshot(0)
    assert not isinstance(blob, bytes)
    again = router.Router()
    again.restore(0, blob())
    assert again.waiting == 2
    out = decoded(again.handle([inbound(0, "mf.bindings", bound("m1", "a1", 0, "open-a1"))]))
    assert len(out[("mf.billing-in", router.account_partition("a1"))]) == 2
    assert router.Router().snapshot(router.STATELESS) == b""  # a stateless group keeps nothing


@pytest.mark.parametrize("seed", range(6))
def test_books_folded_per_partition_match_the_oracle_whatever_order_the_router_reads(seed: int) -> None:
    reference, stream = scenario("p-route", accounts=24, hours=30, seed=seed, clears=0.03)
    rng = random.Random(seed)
    # any order that keeps each subject's own (what a producer keying by subject guarantees);
    # the router reads its input partitions in a random interleaving on top of that
    everything = [*reference, *stream]
    by_key: dict[bytes, list[Event]] = {}
    for e in everything:
        by_key.setdefault(e.key, []).append(e)
    facts = [by_key[e.key].pop(0) for e in rng.sample(everything, len(everything))]
    log: pipeline.Log = {}
    pipeline.publish(log, facts, CODEC)
    pipeline.route(log, rng)
    states = pipeline.fold_books(log, BILLING_IN.partitions)
    expected = oracle.balances([*reference, *stream])
    assert pipeline.balances(states) == expected
    assert sum(len(s.books.accounts) for s in states.values()) == 24
    assert len([p for p, s in states.items() if s.books.accounts]) > 1  # really spread
    assert min(expected.values()) < 10_000  # charges happened


def test_a_replica_folding_its_partitions_again_from_the_log_gives_the_same_outputs() -> None:
    reference, stream = scenario("p-twice", accounts=10, hours=12, seed=9)
    log: pipeline.Log = {}
    pipeline.publish(log, [*reference, *stream], CODEC)
    pipeline.route(log, random.Random(1))
    first = pipeline.fold_books(log, BILLING_IN.partitions)
    second = pipeline.fold_books(log, BILLING_IN.partitions)
    assert pipeline.balances(first) == pipeline.balances(second)
    assert {k: s.books.accounts for k, s in first.items()} == {k: s.books.accounts for k, s in second.items()}


def test_a_tariff_billing_cannot_read_is_rejected_at_the_router_once_and_others_go_on() -> None:
    routing = router.Router()
    magic = tariff({"kind": "magic"}).model_copy(update={"event_id": "t-magic"})
    good = tariff(SINGLE, tid="t2")
    out = decoded(routing.handle([inbound(2 * router.STATELESS, "mf.tariffs", magic, good)]))
    (rejected,) = routing.rejected
    assert rejected.event.event_id == "t-magic" and rejected.error_type == "TariffError"
    assert "kind" in rejected.reason
    for p in range(BILLING_IN.partitions):  # the good one still reaches every partition
        assert [e.event_id for e in out[("mf.billing-in", p)]] == [good.event_id]


def test_readings_travel_on_as_reading_batches_and_other_facts_keep_their_place_between_them() -> None:
    routing = router.Router()
    routing.restore(0, None)
    routing.handle([inbound(0, "mf.bindings", bound("m1", "a1", 0, "open-a1"))])
    facts = [reading(at(2024, 1, 2), 1), reading(at(2024, 1, 3), 2), meter("m1"), reading(at(2024, 1, 4), 3)]
    outputs = routing.handle([inbound(0, "mf.readings", *facts)])
    kinds = [o.value.split(b",", 1)[0] for o in outputs]
    assert kinds == [b'{"type":"acquisition.v1.reading_batch"', b'{"type":"meterflow.v1.event_batch"',
                     b'{"type":"acquisition.v1.reading_batch"']  # fmt: skip
    assert [e.event_id for o in outputs for e in CODEC.decode(o.value)] == [f.event_id for f in facts]
