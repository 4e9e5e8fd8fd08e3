"""Billing goes on past a fact whose fold raises: a tariff it cannot parse is rejected when folded,
the readings of its accounts wait for a valid version, and nothing else stops."""

from __future__ import annotations

from libs.events import Codec
from libs.events.base import Event
from libs.events.billing import BalanceChanged
from libs.stack.processor import Inbound, Outbound
from services.billing.domain.facts import ChargeApplied
from services.billing.worker import BillingState
from tests.services.billing.helpers import SINGLE, account, at, meter, reading, recharge, tariff

CODEC = Codec()
MAGIC = {"kind": "magic"}


def rec(topic: str, offset: int, *events: Event) -> Inbound:
    return Inbound(0, topic, 0, offset, b"k", list(events))


def facts(out: list[Outbound]) -> list[Event]:
    return [e for o in out for e in CODEC.decode(o.value)]


def test_a_bad_tariff_is_rejected_its_readings_wait_and_a_corrected_version_releases_them() -> None:
    state = BillingState()
    state.restore(0, None)
    out = state.handle([
        rec("mf.tariffs", 0, tariff(MAGIC)),
        rec("mf.registry", 0, meter()),
        rec("mf.billing", 0, account(), recharge(10_000, "r1")),
        rec("mf.readings", 0, reading(at(2024, 1, 2), 100), reading(at(2024, 1, 3), 110)),
    ])  # fmt: skip
    (bad,) = state.rejected
    assert (bad.record.topic, bad.error_type, bad.event.event_id) == ("mf.tariffs", "TariffError", "t1-v1")
    assert "invalid tariff definition" in bad.reason
    assert ("proj-1", "t1") not in state.books.tariffs  # never entered the books
    assert [e.balance_fen for e in facts(out) if isinstance(e, BalanceChanged)] == [10_000]  # went on
    assert sum(len(q) for q in state.waiting.values()) == 2  # the readings wait for a valid t1
    state.rejected.clear()

    out = state.handle([rec("mf.tariffs", 1, tariff(SINGLE))])  # the corrected version 1
    assert state.rejected == []
    charges = [e for e in facts(out) if isinstance(e, ChargeApplied)]
    assert [c.amount_fen for c in charges] == [500]  # 10 kWh at 50 fen
    assert state.books.account("proj-1", "a1").balance_fen == 9_500


def test_a_packed_record_rejects_only_its_failing_event() -> None:
    state = BillingState()
    state.restore(0, None)
    good = tariff(SINGLE, tid="t2")
    state.handle([rec("mf.tariffs", 5, tariff(MAGIC), good)])
    assert [r.event.event_id for r in state.rejected] == ["t1-v1"]
    assert ("proj-1", "t2") in state.books.tariffs
