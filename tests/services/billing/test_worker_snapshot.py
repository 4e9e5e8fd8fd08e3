"""Billing's snapshots through the processor, on the real broker: a snapshot of an older format is
refused and the books are rebuilt from the log; a current one is restored without reading it."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from libs.events import Codec
from libs.events.base import Event
from libs.events.topics import Topic
from libs.stack.broker import ensure_topics, free_port
from libs.stack.processor import Inbound, Outbound, Processor, Snapshots, make_app, one_group
from services.billing.domain import oracle
from services.billing.domain.books import Books
from services.billing.testing import scenario
from services.billing.worker import BillingState


class QuietBilling(BillingState):
    """The billing fold with its outputs dropped (the app's producer is not started here)."""

    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        super().handle(batch)
        return []


def _balances(state: BillingState) -> dict[tuple[str, str], int]:
    return {k: a.balance_fen for k, a in state.books.accounts.items()}


async def _produce(bootstrap: str, topic: str, facts: list[Event]) -> None:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for fact in facts:
            await producer.send(topic, codec.encode(fact), key=fact.key)
        await producer.flush()
    finally:
        await producer.stop()


async def _assign(bootstrap: str, directory: Path, topic: str, name: str) -> tuple[QuietBilling, Processor]:
    state = QuietBilling()
    app = make_app(f"billing-snapshot-{name}", bootstrap, directory / name, free_port())
    processor = Processor(
        app,
        bootstrap,
        "billing",
        [topic],
        state,
        state,
        Snapshots(directory / "snapshots"),
        group_of=one_group,
    )
    await processor._on_assigned(None, {TP(topic, 0)})
    await asyncio.gather(*processor._background)  # the catch-up from the snapshot's offsets
    return state, processor


OLD_STATE = pickle.dumps((6, Books(), set(), {}, {}, {}))  # billing's state before pieces


def _old_file(directory: Path, end: dict[str, int]) -> None:
    """The file layout before (format 2) around billing's state before pieces."""
    old = {"format": 2, "offsets": end, "state": OLD_STATE, "at": 0.0}
    (directory / "0.snap").write_bytes(pickle.dumps(old))


def _old_state(directory: Path, end: dict[str, int]) -> None:
    """The current file layout around billing's state before pieces."""
    Snapshots(directory).write(0, end, OLD_STATE)


@pytest.mark.parametrize("old", [_old_file, _old_state])
async def test_an_old_snapshot_is_refused_and_the_books_rebuilt_from_the_log(
    bootstrap: str, tmp_path: Path, topic_name: str, old: Callable[[Path, dict[str, int]], None]
) -> None:
    await asyncio.to_thread(ensure_topics, bootstrap, [Topic(topic_name, 1, "k", "test")])
    reference, stream = scenario("p", accounts=5, hours=6, seed=3)
    facts = [*reference, *stream]
    await _produce(bootstrap, topic_name, facts)
    end = {f"{topic_name}:0": len(facts)}
    (tmp_path / "snapshots").mkdir()
    old(tmp_path / "snapshots", end)  # it claims the whole log: used, it would leave the books empty

    rebuilt, processor = await _assign(bootstrap, tmp_path, topic_name, "first")
    assert processor.next_offsets[0] == end
    assert rebuilt.applied == len(facts)  # every fact applied again, from offset 0
    assert _balances(rebuilt) == oracle.balances(facts) != {}

    # What the processor's writer does with the rebuilt books; a new worker then starts from it.
    processor._write([(0, dict(processor.next_offsets[0]), rebuilt.snapshot(0))])
    restored, again = await _assign(bootstrap, tmp_path, topic_name, "second")
    assert again.next_offsets[0] == end and restored.applied == 0  # nothing read from the log
    assert _balances(restored) == _balances(rebuilt)
    assert restored.registered == rebuilt.registered and restored.books.meters == rebuilt.books.meters
