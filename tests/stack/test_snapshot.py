"""States pickled in pieces (libs/stack/snapshot.py): what is read back, what is refused, and that
writing a large one leaves the event loop running."""

from __future__ import annotations

import asyncio
import gc
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from libs.stack.snapshot import (
    MIN_CHUNKED,
    ChunkedPickle,
    SnapshotRejected,
    Snapshots,
    load_chunked,
)


@dataclass(frozen=True)
class Record:
    owner: str
    balance: Decimal
    tags: tuple[str, ...] = ()


@dataclass
class Ledger:
    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    closed: set[tuple[str, str]] = field(default_factory=set)
    log: list[str] = field(default_factory=list)
    settings: dict[str, int] = field(default_factory=dict)  # small: written inside the document
    by_owner: dict[tuple[str, str], Record] | None = None  # the same map again


def _ledger(n: int) -> Ledger:
    common = ("vip", "north")  # one tuple shared by every record
    records = {
        ("p", f"a{i}"): Record(f"holder {i}", Decimal(i) / 100, common if i % 2 else ()) for i in range(n)
    }
    ledger = Ledger(records, {k for k in list(records)[: n // 3]}, [f"e{i}" for i in range(n // 2)])
    ledger.settings = {"limit": 5}
    ledger.by_owner = ledger.records
    return ledger


def test_a_large_state_comes_back_equal_with_its_shared_references() -> None:
    ledger = _ledger(20_000)
    shared = Record("shared", Decimal("1.5"))
    doc = (3, ledger, {"x": shared, "y": shared}, [shared])
    chunked = ChunkedPickle(doc)
    assert sorted(len(c) for c in chunked.containers) == [6_666, 10_000, 20_000]  # settings is small

    version, back, small, listed = load_chunked(chunked())
    assert version == 3 and back == ledger and back.records == ledger.records
    assert back.closed == ledger.closed and back.log == ledger.log and back.settings == {"limit": 5}
    assert back.by_owner is back.records  # one map, referred to twice, is one map again
    assert small["x"] is small["y"] is listed[0] == shared  # shared in the document: still shared
    first, second = back.records["p", "a1"], back.records["p", "a3"]
    assert first.tags == second.tags == ("vip", "north")  # across slices: equal copies at least


def test_an_empty_state_and_a_small_one_round_trip() -> None:
    docs: list[object] = [(1, Ledger()), (1, _ledger(MIN_CHUNKED - 1)), None, {}]
    for doc in docs:
        chunked = ChunkedPickle(doc)
        assert chunked.containers == []
        assert load_chunked(chunked()) == doc


def test_the_document_is_read_first_so_an_old_version_is_refused_before_its_maps() -> None:
    blob = ChunkedPickle((7, _ledger(1_000)))()
    seen = []

    def accept(doc: tuple[int, Ledger]) -> bool:
        seen.append((doc[0], len(doc[1].records)))
        return doc[0] == 8

    with pytest.raises(SnapshotRejected, match="another version"):
        load_chunked(blob, accept)
    assert seen == [(7, 0)]  # only the document was read: its large map still empty
    version, ledger = pickle.loads(blob)  # a plain unpickler reads the document alone
    assert version == 7 and ledger.records == {} and ledger.settings == {"limit": 5}


def test_a_plain_pickle_or_a_torn_stream_is_refused() -> None:
    with pytest.raises(SnapshotRejected, match="older format"):
        load_chunked(pickle.dumps((7, _ledger(1_000))))  # the format before pieces
    blob = ChunkedPickle((7, _ledger(1_000)))()
    for cut in (len(blob) // 2, len(blob) - 1, 3):
        with pytest.raises(SnapshotRejected, match="unreadable"):
            load_chunked(blob[:cut])


def test_a_snapshot_file_holds_offsets_and_state_and_replaces_the_last(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path)
    assert snapshots.read(0) is None
    snapshots.write(0, {"t:0": 5}, b"small state")
    assert snapshots.read(0) == ({"t:0": 5}, b"small state")
    ledger = _ledger(5_000)
    snapshots.write(0, {"t:0": 9}, ChunkedPickle(ledger))
    found = snapshots.read(0)
    assert found is not None and found[0] == {"t:0": 9} and load_chunked(found[1]) == ledger
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.snap"]  # the temp file was renamed


def test_a_file_of_the_format_before_is_not_used(tmp_path: Path) -> None:
    old = {"format": 2, "offsets": {"t:0": 5}, "state": pickle.dumps(_ledger(10)), "at": 0.0}
    (tmp_path / "0.snap").write_bytes(pickle.dumps(old))
    (tmp_path / "1.snap").write_bytes(b"\x80\x05torn")
    assert Snapshots(tmp_path).read(0) is None and Snapshots(tmp_path).read(1) is None


async def _largest_gap_while(write: Callable[[], object]) -> tuple[float, int]:
    """(largest gap between the ticks of a 1 ms ticker, ticks) while ``write`` runs in a thread."""
    gaps: list[float] = []
    running = True

    async def tick() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.02)
    gaps.clear()
    await asyncio.to_thread(write)
    running = False
    await ticker
    return max(gaps), len(gaps)


async def test_writing_a_large_snapshot_leaves_the_event_loop_running(tmp_path: Path) -> None:
    ledger = _ledger(200_000)
    # The heap built here stays out of collections during the measurement, as the processor
    # freezes a restored state: a full collection of it would be a pause of the collector's.
    gc.collect()
    gc.freeze()
    try:
        started = time.perf_counter()
        blob = pickle.dumps(ledger, protocol=pickle.HIGHEST_PROTOCOL)
        dumps = time.perf_counter() - started  # how long the loop stopped, the old way
        snapshots = Snapshots(tmp_path)
        gap, ticks = await _largest_gap_while(lambda: snapshots.write(0, {}, ChunkedPickle(ledger)))
    finally:
        gc.unfreeze()
    found = snapshots.read(0)
    assert found is not None and load_chunked(found[1]) == ledger
    assert ticks > 20  # the loop ran all along the write
    assert gap < dumps / 10, f"largest loop pause {gap * 1e3:.1f} ms, one pickle.dumps {dumps * 1e3:.0f} ms"
    assert len(blob) > 5_000_000  # a state large enough for the difference to show
