"""Packed outputs: any facts in one message, decoded back in order, partitioned like single sends."""

from __future__ import annotations

import orjson
import pytest

from libs.events import BalanceChanged, Codec, EventDecodeError, RechargeAccepted, event_id_for
from libs.events.codec import EVENT_BATCH_TYPE, pack_events, partition_for
from libs.events.topics import CATALOGUE, LEDGER

PARTITIONS = {t.name: t.partitions for t in CATALOGUE}


def balance(account: str, n: int) -> BalanceChanged:
    return BalanceChanged(
        event_id=event_id_for("p", account, str(n)), project_id="p", subject_id=account, account_id=account,
        delta_fen=-n, balance_fen=1000 - n, reason="charge",
    )  # fmt: skip


def test_a_batch_decodes_to_its_events_in_order() -> None:
    codec = Codec()
    events = [balance(f"a{i % 3}", i) for i in range(10)]
    assert codec.decode(codec.encode_events(events)) == events


def test_pack_events_puts_each_subject_on_its_own_partition_in_order() -> None:
    codec = Codec()
    events = [balance(f"a{i % 7}", i) for i in range(40)]
    packed = pack_events(events, PARTITIONS.__getitem__, max_per_message=4, codec=codec)
    seen: list[BalanceChanged] = []
    for topic, message in packed:
        assert topic == LEDGER.name and message.count <= 4
        decoded = codec.decode(message.value)
        assert {partition_for(e.key, LEDGER.partitions) for e in decoded} == {message.partition}
        seen += decoded  # type: ignore[arg-type]
    for account in {e.account_id for e in events}:
        assert [e for e in seen if e.account_id == account] == [e for e in events if e.account_id == account]


def test_unknown_items_are_skipped_and_counted_bad_items_are_errors() -> None:
    codec = Codec()
    good = balance("a1", 1)
    doc = orjson.loads(codec.encode_events([good]))
    doc["events"].append({"type": "billing.v9.from_the_future", "x": 1})
    assert codec.decode(orjson.dumps(doc)) == [good]
    assert codec.skipped["billing.v9.from_the_future"] == 1
    doc["events"].append({"type": RechargeAccepted.TYPE, "amount_fen": -5})
    with pytest.raises(EventDecodeError, match="recharge_accepted"):
        codec.decode(orjson.dumps(doc))
    with pytest.raises(EventDecodeError, match="not a list"):
        codec.decode(b'{"type":"%s","events":{}}' % EVENT_BATCH_TYPE.encode())


def test_ignored_types_are_dropped_before_validation_in_every_form() -> None:
    codec = Codec()
    keep = RechargeAccepted(
        event_id="r1", project_id="p", subject_id="a1", account_id="a1", amount_fen=5,
        idempotency_key="k", operator_id="op", channel="cash",
    )  # fmt: skip
    ignore = frozenset({BalanceChanged.TYPE})
    doc = orjson.loads(codec.encode_events([balance("a1", 1), keep]))
    doc["events"].insert(0, {"type": BalanceChanged.TYPE, "delta_fen": "not even valid"})
    assert codec.decode(orjson.dumps(doc), ignore) == [keep]
    assert codec.decode(codec.encode(balance("a1", 2)), ignore) == []
    assert not codec.skipped  # ignored is not unknown
    with pytest.raises(EventDecodeError):  # without the filter the bad item is an error
        codec.decode(orjson.dumps(doc))
