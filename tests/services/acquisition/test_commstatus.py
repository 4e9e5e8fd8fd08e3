from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.events.acquisition import (
    ConcentratorOffline,
    ConcentratorOnline,
    MeterLostContact,
    MeterOnline,
    RouteSwitched,
)
from services.acquisition.commstatus import CommConfig, CommState, PollRound, fold, route_for
from services.acquisition.registry import Bus, Concentrator, Meter, Project, Registry, SerialEndpoint

T0 = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai


def registry() -> Registry:
    def bus(bid: str, *ns: int) -> Bus:
        ms = tuple(Meter(id=f"m{n}", address=f"{n:012d}", protocol="dlt645-2007", model="x") for n in ns)
        return Bus(id=bid, transport=SerialEndpoint(device=bid), protocol="dlt645-2007", meters=ms)

    c1 = Concentrator(
        id="c1", uplink=SerialEndpoint(device="0"), alternates=("c2",), buses=(bus("b1", 1, 2), bus("b2", 3))
    )
    c2 = Concentrator(id="c2", uplink=SerialEndpoint(device="0"), buses=(bus("b3", 4),))
    return Registry(projects=(Project(id="p", concentrators=(c1, c2)),))


def run(rounds, config=CommConfig()):
    state, out, reg = CommState(), [], registry()
    for i, (reads, uplinks) in enumerate(rounds):
        state, events = fold(
            state, reg, PollRound(at=T0 + timedelta(minutes=i), reads=reads, uplinks=uplinks), config
        )
        out.append(events)
    return state, out


def kinds(events):
    return [(type(e).__name__, e.subject_id) for e in events]


def test_meter_lost_after_three_failures_and_back_on_first_success():
    rounds = [({"m4": ok}, {}) for ok in (True, False, False, False, False, True)]
    state, out = run(rounds)
    meter_events = [[k for k in kinds(evs) if k[1] == "m4"] for evs in out]
    assert meter_events == [
        [("MeterOnline", "m4")],
        [],
        [],
        [("MeterLostContact", "m4")],
        [],
        [("MeterOnline", "m4")],
    ]
    lost = next(e for e in out[3] if isinstance(e, MeterLostContact))
    assert lost.consecutive_failures == 3 and lost.last_seen == T0
    assert state.meters["m4"].online is True


def test_concentrator_offline_when_all_its_meters_fail_and_failover_and_back():
    ok = {"m1": True, "m2": True, "m3": True, "m4": True}
    dead = {"m1": False, "m2": False, "m3": False, "m4": True}
    rounds = [
        (ok, {}),
        (dead, {}),
        ({**ok}, {"c1": False}),
        (ok, {"c1": True}),
        (ok, {"c1": True}),
        (ok, {"c1": True}),
        (ok, {}),
    ]
    state, out = run(rounds, CommConfig(switch_back_after=3))
    assert ("ConcentratorOnline", "c1") in kinds(out[0]) and ("ConcentratorOnline", "c2") in kinds(out[0])
    offline = [e for e in out[1] if isinstance(e, ConcentratorOffline)]
    assert [(e.concentrator_id, e.reason) for e in offline] == [("c1", "all_meters_failed")]
    switched = [e for e in out[1] if isinstance(e, RouteSwitched)]
    assert sorted(e.meter_id for e in switched) == ["m1", "m2", "m3"]
    assert (
        switched[0].to_route.via == ("c2",)
        and switched[0].to_route.failover
        and not switched[0].from_route.failover
    )
    assert out[2] == [] or all(not isinstance(e, (RouteSwitched, ConcentratorOffline)) for e in out[2])
    assert [type(e) for e in out[3]] == [ConcentratorOnline]  # online again, but not yet trusted
    assert out[4] == []
    back = [e for e in out[5] if isinstance(e, RouteSwitched)]
    assert len(back) == 3 and all(not e.to_route.failover and e.from_route.via == ("c2",) for e in back)
    assert route_for(state, registry(), "m1").via == ()
    assert out[6] == []


def test_online_time_statistics_split_at_local_midnight():
    start = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)  # 23:00 Shanghai
    reg, state = registry(), CommState()
    for at, ok in ((start, True), (start + timedelta(hours=2), True), (start + timedelta(hours=3), False)):
        state, _ = fold(state, reg, PollRound(at=at, reads={"m4": ok}))
    link = state.meters["m4"]
    assert link.online_seconds == {date(2024, 3, 1): 3600.0, date(2024, 3, 2): 7200.0}
    assert link.availability(date(2024, 3, 2)) == 7200 / 86400


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.booleans(), st.sampled_from([None, True, False])), max_size=40),
    st.integers(1, 5),
)
def test_transitions_are_emitted_exactly_once(outcomes, lost_after):
    rounds = [({"m1": a, "m2": a, "m3": a, "m4": b}, {} if u is None else {"c1": u}) for a, b, u in outcomes]
    _, out = run(rounds, CommConfig(lost_after=lost_after))
    flat = [e for evs in out for e in evs]
    for subject in ("m1", "m4", "c1"):
        seq = [type(e) for e in flat if e.subject_id == subject and not isinstance(e, RouteSwitched)]
        assert all(a is not b for a, b in itertools.pairwise(seq))  # strictly alternating
    m4 = [b for _, b, _ in outcomes]
    expected, online, failures = [], None, 0
    for ok in m4:  # reference model of the meter rule
        failures = 0 if ok else failures + 1
        if ok and online is not True:
            expected.append(MeterOnline)
            online = True
        elif not ok and online is not False and failures >= lost_after:
            expected.append(MeterLostContact)
            online = False
    assert [type(e) for e in flat if e.subject_id == "m4"] == expected
    ids = [e.event_id for e in flat]
    assert len(ids) == len(set(ids))
    switches = [e for e in flat if isinstance(e, RouteSwitched) and e.meter_id == "m1"]
    assert all(a.to_route == b.from_route for a, b in itertools.pairwise(switches))
