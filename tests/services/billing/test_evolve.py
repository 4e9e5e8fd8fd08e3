from __future__ import annotations

import pytest

from services.billing.domain.consumption import MeterState, Snapshot
from services.billing.domain.evolve import evolve
from tests.services.billing.helpers import at


def test_evolve_copies_and_changes_only_the_named_fields() -> None:
    state = MeterState(meter_id="m1", digits=6)
    snap = Snapshot(at(2024, 1, 1), 1, {})
    new = evolve(state, last=snap)
    assert (new.last, new.digits, new.meter_id) == (snap, 6, "m1")
    assert state.last is None and new == MeterState(meter_id="m1", digits=6, last=snap)


def test_evolve_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match="no field"):
        evolve(MeterState(meter_id="m1"), lats=None)
