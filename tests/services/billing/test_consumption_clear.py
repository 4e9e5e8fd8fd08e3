"""A meter cleared in the field (C5, DL/T 645-2007 1AH) is charged only what it really counted:
acquisition's ``MeterReplaced(reason=cleared)`` closes the registers before the clear and opens
at the zeros after, so the drop to zero is neither a negative delta nor a rollover."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from libs.events.acquisition import MeterReplaced, Rate, ReplacementReason
from services.billing.domain.consumption import Anomaly, Delta, Ignored, observe, registered, replaced
from tests.services.billing.helpers import P, at, d, meter, reading

T0 = at(2024, 3, 1, 0)


def clear(at_hours: float, final: dict[Rate, str], initial: dict[Rate, str]) -> MeterReplaced:
    return MeterReplaced(
        event_id=f"clear-{at_hours}", project_id=P, subject_id="m1", meter_id="m1",
        old_address="000000000001", new_address="000000000001",
        final_registers={"active_import_kwh": {r: d(v) for r, v in final.items()}},
        initial_registers={"active_import_kwh": {r: d(v) for r, v in initial.items()}},
        replaced_at=T0 + timedelta(hours=at_hours), reason=ReplacementReason.CLEARED,
    )  # fmt: skip


def charged(outcomes: list[object]) -> tuple[Decimal, Decimal]:
    deltas = [o for o in outcomes if isinstance(o, Delta)]
    assert not [o for o in outcomes if isinstance(o, Anomaly)]
    return sum((x.total for x in deltas), Decimal(0)), sum((x.by_rate[Rate.PEAK] for x in deltas), Decimal(0))


def test_readings_before_and_after_a_clear_charge_only_the_real_use() -> None:
    state = registered(None, meter())
    outcomes: list[object] = []
    facts = [
        reading(T0, "999000.00", peak="600000.00"),  # a register far up: a drop to 0 looks like a wrap
        reading(T0 + timedelta(hours=1), "999004.50", peak="600003.00"),
        clear(
            1.5, {Rate.TOTAL: "999006.00", Rate.PEAK: "600004.00"}, {Rate.TOTAL: "0.00", Rate.PEAK: "0.00"}
        ),
        reading(T0 + timedelta(hours=1, minutes=20), "999005.50", peak="600003.50", eid="late"),  # before
        reading(T0 + timedelta(hours=2), "0.80", peak="0.50"),
        reading(T0 + timedelta(hours=3), "2.30", peak="1.00"),
    ]
    for fact in facts:
        state, out = replaced(state, fact) if isinstance(fact, MeterReplaced) else observe(state, fact)
        outcomes.append(out)
    assert outcomes[0] == Ignored("baseline") and outcomes[3] == Ignored("before_replacement")
    # 6.00 up to the clear (4.50 + 1.50) and 2.30 counted since, 1.00 of them at peak after 4.00 before
    assert charged(outcomes) == (Decimal("8.30"), Decimal("5.00"))
    closing = outcomes[2]
    assert (
        isinstance(closing, Delta) and closing.end == T0 + timedelta(hours=1.5) and closing.total == d("1.50")
    )


def test_without_the_clear_fact_the_drop_is_never_charged_as_use() -> None:
    """What the fact prevents: billing alone takes 999006 → 0.80 for a wrap of 994.80 kWh (the
    register is near its capacity), and 1004.50 → 0.80 for a negative anomaly."""
    state = registered(None, meter())
    state, _ = observe(state, reading(T0, "999006.00"))
    _, wrapped = observe(state, reading(T0 + timedelta(hours=10), "0.80"))
    assert isinstance(wrapped, Delta) and wrapped.total == d("994.80")  # a false charge
    cleared, _ = replaced(state, clear(1, {Rate.TOTAL: "999006.00"}, {Rate.TOTAL: "0.00"}))
    _, after = observe(cleared, reading(T0 + timedelta(hours=10), "0.80"))
    assert isinstance(after, Delta) and after.total == d("0.80")
    state = registered(None, meter())
    state, _ = observe(state, reading(T0, "1004.50"))
    _, negative = observe(state, reading(T0 + timedelta(hours=2), "0.80"))
    assert isinstance(negative, Anomaly) and negative.reason == "negative"
