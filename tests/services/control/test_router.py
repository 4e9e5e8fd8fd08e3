"""Control's router and per-partition state: every fact reaches the partitions of the meters it
concerns, and control folded per meter partition emits exactly what one global state emits."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from libs.events import AccountOpened, AlarmCleared, AlarmRaised, Codec, MeterRegistered, TariffPublished
from libs.events import control as f
from libs.events.base import Event
from libs.events.billing import AccountTariffChanged, AlarmKind, BillingMode
from libs.events.control import BatchRequested, Operation
from libs.events.topics import CONTROL_IN, READINGS, REGISTRY_TOPIC
from libs.stack.processor import Inbound
from services.control import router
from services.control.worker import ControlState
from tests.services.control.helpers import P, at

CODEC = Codec()
T0 = at(2026, 5, 1, 8)


def envelope(subject: str, minutes: int, eid: str) -> dict[str, Any]:
    return {"event_id": eid, "project_id": P, "subject_id": subject, "time": T0 + timedelta(minutes=minutes)}


def registered(meter: str, model: str) -> MeterRegistered:
    return MeterRegistered(**envelope(meter, 0, f"reg-{meter}"), meter_id=meter, address="000000000001",
                           protocol="dlt645-2007", model=model, medium="electricity", concentrator_id="c1",
                           bus_id="b1")  # fmt: skip


def opened(account: str, meters: tuple[str, ...]) -> AccountOpened:
    return AccountOpened(**envelope(account, 1, f"open-{account}"), account_id=account, mode=BillingMode.PREPAID,
                         meter_ids=meters, tariff_id="t1", holder="h", opened_by="op")  # fmt: skip


def arrears(account: str, meters: tuple[str, ...], minutes: int, raised: bool) -> Event:
    common = envelope(account, minutes, f"{'r' if raised else 'c'}-{account}-{minutes}")
    details = {"meter_ids": ",".join(meters)}
    if raised:
        return AlarmRaised(**common, alarm_id=f"al-{account}", kind=AlarmKind.ARREARS, severity=3,
                           message="arrears", details=details)  # fmt: skip
    return AlarmCleared(**common, alarm_id=f"al-{account}", kind=AlarmKind.ARREARS, reason="recharge",
                        details=details)  # fmt: skip


def tariff(version: int, minutes: int) -> TariffPublished:
    return TariffPublished(**envelope("t1", minutes, f"t1-v{version}"), tariff_id="t1", version=version,
                           name="t1", effective_from=T0, definition={"kind": "single", "price_fen": str(50 + version)})  # fmt: skip


def inbound(topic: str, *facts: Event) -> Inbound:
    return Inbound(
        router.group_of(topic, 0), topic, 0, 0, None, [CODEC.decode(CODEC.encode(x))[0] for x in facts]
    )


def routed(outputs: list[router.Outbound]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for o in outputs:
        assert o.topic == CONTROL_IN.name and o.partition is not None
        out.setdefault(o.partition, []).extend(e.event_id for e in CODEC.decode(o.value))
    return out


def meters_on_distinct_partitions(n: int) -> list[str]:
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(router.meter_partition(f"m{i}"), f"m{i}")
        if len(found) == n:
            break
    return list(found.values())


def test_control_in_is_co_partitioned_with_the_meter_topics_it_joins() -> None:
    assert CONTROL_IN.partitions == READINGS.partitions == REGISTRY_TOPIC.partitions


def test_multi_meter_facts_go_to_each_of_their_meters_partitions_and_reference_facts_everywhere() -> None:
    m1, m2 = meters_on_distinct_partitions(2)
    p1, p2 = router.meter_partition(m1), router.meter_partition(m2)
    routing = router.Router()
    batch = BatchRequested(**envelope("b1", 2, "batch-1"), batch_id="b1", operation=Operation.CLEAR,
                           meter_ids=(m1, m2), operator_id="op")  # fmt: skip
    keep = f.KeepPowerSet(**envelope(m2, 3, "keep"), meter_id=m2, operator_id="op")
    out = routed(
        routing.handle([inbound("mf.billing", opened("a1", (m1, m2)))])
        + routing.handle([inbound("mf.alarms", arrears("a1", (m1, m2), 5, True))])
        + routing.handle([inbound("mf.control", batch, keep)])
        + routing.handle([inbound("mf.tariffs", tariff(1, 0))])
    )
    assert out[p1] == ["open-a1", "r-a1-5", "batch-1", "t1-v1"]
    assert out[p2] == ["open-a1", "r-a1-5", "batch-1", "keep", "t1-v1"]
    assert all(ids == ["t1-v1"] for p, ids in out.items() if p not in (p1, p2))
    # alarms that drive no relay are not routed at all
    low = AlarmRaised(**envelope("a1", 6, "low"), alarm_id="low", kind=AlarmKind.BALANCE_LEVEL1, severity=1,
                      message="low")  # fmt: skip
    assert routing.handle([inbound("mf.alarms", low)]) == []


def scenario(seed: int) -> list[Event]:
    """A site over time: meters (half keeping prices), accounts of one to three meters, a tariff
    and its new version, keep-power and forced states, arrears raised and cleared, batches."""
    rng = random.Random(seed)
    meters = [f"m{i}" for i in range(40)]
    facts: list[Event] = [tariff(1, 0)]
    facts += [registered(m, "DDSY" if i % 2 else "DDZY") for i, m in enumerate(meters)]
    accounts: dict[str, tuple[str, ...]] = {}
    pool = list(meters)
    rng.shuffle(pool)
    while pool:
        take = tuple(pool[: rng.randint(1, 3)])
        del pool[: len(take)]
        accounts[f"a{len(accounts)}"] = take
    facts += [opened(a, ms) for a, ms in accounts.items()]
    for minute in range(10, 200, 3):
        kind = rng.random()
        account = rng.choice(sorted(accounts))
        meter = rng.choice(meters)
        if kind < 0.35:
            facts.append(arrears(account, accounts[account], minute, raised=rng.random() < 0.6))
        elif kind < 0.5:
            cls = f.KeepPowerSet if rng.random() < 0.6 else f.KeepPowerCleared
            facts.append(cls(**envelope(meter, minute, f"kp-{minute}"), meter_id=meter, operator_id="op"))
        elif kind < 0.6:
            facts.append(f.ForcedStateSet(**envelope(meter, minute, f"fs-{minute}"), meter_id=meter, operator_id="op",
                                          state=rng.choice(list(f.Supply))))  # fmt: skip
        elif kind < 0.7:
            facts.append(f.ForcedStateCleared(**envelope(meter, minute, f"fc-{minute}"), meter_id=meter,
                                              operator_id="op"))  # fmt: skip
        elif kind < 0.8:
            chosen = tuple(rng.sample(meters, rng.randint(2, 8)))
            op = rng.choice([Operation.CLEAR, Operation.ISSUE_PRICES, Operation.INITIALISE])
            facts.append(BatchRequested(**envelope(f"b{minute}", minute, f"batch-{minute}"), batch_id=f"b{minute}",
                                        operation=op, meter_ids=chosen, operator_id="op"))  # fmt: skip
        elif kind < 0.9:
            facts.append(AccountTariffChanged(**envelope(account, minute, f"tc-{minute}"), account_id=account,
                                              tariff_id="t1", effective_from=T0 + timedelta(minutes=minute),
                                              operator_id="op"))  # fmt: skip
        else:
            facts.append(tariff(minute, minute))
    return facts


def emitted(state: ControlState, facts: list[Event]) -> dict[str, Event]:
    out: dict[str, Event] = {}
    for fact in facts:
        for e in state.fold(fact):
            out[e.event_id] = e
    return out


@pytest.mark.parametrize("seed", range(4))
def test_control_folded_per_meter_partition_emits_what_one_global_state_emits(seed: int) -> None:
    facts = scenario(seed)
    whole = ControlState(clock=lambda: (T0 + timedelta(days=1)).timestamp())
    expected = emitted(whole, facts)
    routing = router.Router()
    per: dict[int, list[Event]] = {}
    for fact in facts:  # meter-keyed inputs go straight to their partition; the rest via the router
        if isinstance(fact, MeterRegistered):
            per.setdefault(router.meter_partition(fact.meter_id), []).append(fact)
            continue
        for o in routing.handle([inbound(fact.TOPIC, fact)]):
            assert o.partition is not None
            per.setdefault(o.partition, []).extend(CODEC.decode(o.value))
    got: dict[str, Event] = {}
    states = {}
    for p, routed_facts in sorted(per.items()):
        states[p] = ControlState(
            clock=lambda: (T0 + timedelta(days=1)).timestamp(),
            owns=lambda m, p=p: router.meter_partition(m) == p,
        )
        for event_id, e in emitted(states[p], routed_facts).items():
            assert event_id not in got, "two partitions emitted the same fact"
            got[event_id] = e
    assert len(expected) > 20 and any(isinstance(e, f.CommandRequested) for e in expected.values())
    assert got.keys() == expected.keys()
    assert got == expected
    for key, meter in whole.meters.items():  # the same verdict per meter, in its partition
        mine = states[router.meter_partition(key[1])].meters[key]
        assert mine.policy == meter.policy, key
