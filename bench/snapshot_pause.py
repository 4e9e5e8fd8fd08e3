"""How long a billing snapshot stops the event loop: one ``pickle.dumps`` vs a chunked pickle.

Builds the books of N accounts (one meter each, ``services.billing.testing.scenario``) by folding
their reference facts and a few hours of readings into ``BillingState``, then writes snapshots
from a worker thread as the processor does where it cannot fork (on Linux a forked child writes
them, which takes nothing from the loop but the fork itself) while an asyncio task ticks every 1 ms and records the
largest gap between its ticks (the time the loop could not run). Before each measured snapshot
every meter reads once more — a minute of traffic — so each one finds records the fold replaced,
as in a running worker. The heap built so far is frozen, as the processor does after a restore
(``gc.freeze``), and collected before each copy and write, so that a garbage collection counted
during a write is one the write's own allocations caused; it is reported apart, being the
collector's pause (its thresholds: ``tune_gc``), not the pickler's.

- old: ``pickle.dumps`` of the copy in the thread, then the bytes written (the former
  ``Processor._write``);
- new: ``Snapshots.write`` of a ``ChunkedPickle`` of the copy, pickled in pieces.

Also reported: the copy taken on the loop (``BillingState.snapshot``), which still runs there;
and reading the snapshot back at an assignment: the whole restore on the loop (as before), and as
the processor does it now — the snapshot read in a thread (the loop's largest pause meanwhile),
then the state's restore of the document read (on the loop), with no garbage collection until the
restored state is frozen.
Run: `.venv/bin/python bench/snapshot_pause.py [--accounts N]` (100,000: about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from libs.events import Event
from libs.stack.processor import _read_snapshot, tune_gc
from libs.stack.snapshot import PIECE_SECONDS, ChunkedPickle, Snapshots
from services.billing.testing import scenario
from services.billing.worker import BillingState


@dataclass
class Pause:
    took: float  # seconds the write took in its thread
    gaps: list[tuple[float, float]]  # (from, to) between two 1 ms ticks of the loop
    collections: list[tuple[float, float]]  # (from, to) of each garbage collection meanwhile

    def largest(self, without_collections: bool = False) -> float:
        """The longest gap (seconds), or the longest in which no collection ran."""
        return max(
            b - a
            for a, b in self.gaps
            if not (without_collections and any(a < end and start < b for start, end in self.collections))
        )


async def loop_gap(write: Callable[[], object]) -> Pause:
    """How the loop fared while ``write`` ran in a thread."""
    gaps: list[tuple[float, float]] = []
    collections: list[tuple[float, float]] = []
    running = True

    def collecting(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append((time.perf_counter(), 0.0))
        else:
            collections[-1] = (collections[-1][0], time.perf_counter())

    async def tick() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((last, now))
            last = now

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.05)
    gaps.clear()
    gc.callbacks.append(collecting)
    started = time.perf_counter()
    await asyncio.to_thread(write)
    took = time.perf_counter() - started
    gc.callbacks.remove(collecting)
    running = False
    await ticker
    return Pause(took, gaps, collections)


def write_old(path: Path, doc: object) -> None:
    blob = pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL)
    with open(path, "wb") as out:
        out.write(blob)
        out.flush()
        os.fsync(out.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--hours", type=int, default=2, help="readings per meter before measuring")
    args = parser.parse_args()
    tune_gc()  # the processor's collector settings
    started = time.perf_counter()
    reference, stream = scenario("p", accounts=args.accounts, hours=args.hours + 2, seed=1)
    hours = [list(group) for _, group in groupby(stream, key=lambda e: e.time)]
    state = BillingState()
    for fact in [*reference, *(f for hour in hours[: args.hours] for f in hour)]:
        state.fold(fact)
    facts = len(reference) + sum(len(h) for h in hours[: args.hours])
    print(f"{args.accounts:,} accounts: {facts:,} facts folded in {time.perf_counter() - started:.0f} s")
    gc.collect()
    gc.freeze()

    with tempfile.TemporaryDirectory() as tmp:
        snapshots = Snapshots(Path(tmp))
        snapshots.write(0, {}, ChunkedPickle(state.snapshot(0).document))  # the previous minute's

        def minute(hour: list[Event]) -> tuple[float, object]:
            for fact in hour:
                state.fold(fact)
            gc.collect()  # a collection that falls in the copy or the write is then one they caused
            copied = time.perf_counter()
            doc = state.snapshot(0).document
            took = time.perf_counter() - copied
            gc.collect()
            return took, doc

        copy_old, doc = minute(hours[args.hours])
        old = asyncio.run(loop_gap(lambda: write_old(Path(tmp) / "old.snap", doc)))
        old_size = (Path(tmp) / "old.snap").stat().st_size
        copy_new, doc = minute(hours[args.hours + 1])
        chunked = ChunkedPickle(doc)
        containers = len(chunked.containers)
        new = asyncio.run(loop_gap(lambda: snapshots.write(0, {}, chunked)))
        new_size = (Path(tmp) / "0.snap").stat().st_size
        gc.collect()
        found = snapshots.read(0)
        assert found is not None
        started = time.perf_counter()
        BillingState().restore(0, found[1])
        on_loop = time.perf_counter() - started
        gc.collect()
        read: list[object] = []
        gc.disable()  # as the processor: no collection until the restored state is frozen
        threaded = asyncio.run(loop_gap(lambda: read.append(_read_snapshot(snapshots, 0))))
        started = time.perf_counter()
        restored = BillingState()
        restored.restore(0, read[0][1])  # type: ignore[index]
        handed = time.perf_counter() - started
        gc.freeze()
        gc.enable()
        assert len(restored.books.accounts) == args.accounts

    print(f"copy on the loop (BillingState.snapshot): {copy_old * 1e3:.1f} ms, {copy_new * 1e3:.1f} ms")
    print(
        f"{'':5}{'size MB':>9}{'write s':>9}{'largest pause ms':>18}{'(no GC in it)':>15}  collections meanwhile"
    )
    for name, size, pause in (("old", old_size, old), ("new", new_size, new)):
        spans = [end - start for start, end in pause.collections]
        longest = f", longest {max(spans) * 1e3:.1f} ms" if spans else ""
        print(
            f"{name:5}{size / 1e6:>9.1f}{pause.took:>9.2f}{pause.largest() * 1e3:>18.1f}"
            f"{pause.largest(without_collections=True) * 1e3:>15.1f}  {len(spans)}{longest}"
        )
    print(
        f"restore at an assignment: all on the loop {on_loop:.2f} s; read in a thread {threaded.took:.2f} s"
        f" (largest loop pause {threaded.largest() * 1e3:.1f} ms, {len(threaded.collections)} collections"
        f" meanwhile), then restored on the loop in"
        f" {handed * 1e3:.1f} ms"
    )
    print(
        f"new: {containers} maps written in pieces of ~{PIECE_SECONDS * 1e3:.0f} ms of CPU;"
        " a collection is the collector's pause (tune_gc), not the pickler's"
    )


if __name__ == "__main__":
    main()
