"""Restoring a partition: a snapshot the state rejects (an older format) means a log rebuild."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from faust.types import TP

from libs.events.topics import Topic
from libs.stack.broker import ensure_topics, free_port
from libs.stack.processor import Inbound, Outbound, Processor, SnapshotRejected, Snapshots, make_app
from libs.stack.snapshot import Blob, ChunkedPickle, Loaded, load_chunked


class Picky:
    """Accepts only snapshots of the current format (b"v2:…")."""

    def __init__(self) -> None:
        self.restored: list[bytes | None] = []

    def restore(self, partition: int, blob: bytes | None) -> None:
        self.restored.append(blob)
        if blob is not None and not blob.startswith(b"v2:"):
            raise SnapshotRejected

    def snapshot(self, partition: int) -> bytes:
        return b"v2:state"

    def forget(self, partition: int) -> None:
        pass

    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        return []


async def _assign(bootstrap: str, tmp_path: Path, topic: str, blob: bytes) -> tuple[Picky, Processor]:
    snapshots = Snapshots(tmp_path / "snapshots")
    snapshots.write(0, {f"{topic}:0": 5}, blob)
    app = make_app(f"restore-{topic}", bootstrap, tmp_path / "faust", free_port())
    state = Picky()
    processor = Processor(app, bootstrap, "picky", [topic], state, state, snapshots)
    await processor._on_assigned(None, {TP(topic, 0)})
    await asyncio.gather(*processor._background)  # the catch-up of the (empty) topic
    return state, processor


async def test_a_rejected_snapshot_is_rebuilt_from_offset_zero(
    bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    await asyncio.to_thread(ensure_topics, bootstrap, [Topic(topic_name, 1, "k", "test")])
    state, processor = await _assign(bootstrap, tmp_path, topic_name, b"v1:old")
    assert state.restored == [b"v1:old", None]  # refused, then started empty
    assert processor.next_offsets[0] == {}  # so every record is applied again from offset 0
    state, processor = await _assign(bootstrap, tmp_path / "again", topic_name, b"v2:new")
    assert state.restored == [b"v2:new"] and processor.next_offsets[0] == {f"{topic_name}:0": 5}


class Large(Picky):
    """Snapshots as the services do: a chunked pickle of a large map."""

    def restore(self, partition: int, blob: Blob | None) -> None:
        self.restored.append(blob)  # type: ignore[arg-type]
        self.loaded_in = threading.current_thread()
        self.document = load_chunked(blob, lambda doc: isinstance(doc, dict)) if blob else None


async def test_a_chunked_snapshot_is_read_off_the_event_loop(
    bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    """The load (seconds for a large state) runs in a thread, the loop going on meanwhile; the
    state gets the document already read, and runs its restore on the loop."""
    await asyncio.to_thread(ensure_topics, bootstrap, [Topic(topic_name, 1, "k", "test")])
    document = {"entries": {f"meter-{i}": (i, f"account-{i % 97}") for i in range(300_000)}}
    snapshots = Snapshots(tmp_path / "snapshots")
    snapshots.write(0, {f"{topic_name}:0": 7}, ChunkedPickle(document))
    app = make_app(f"restore-{topic_name}", bootstrap, tmp_path / "faust", free_port())
    state = Large()
    processor = Processor(app, bootstrap, "large", [topic_name], state, state, snapshots)
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(ticking())
    try:
        await processor._on_assigned(None, {TP(topic_name, 0)})
    finally:
        ticker.cancel()
    await asyncio.gather(*processor._background)
    [blob] = state.restored
    assert isinstance(blob, Loaded) and state.document == document
    assert state.loaded_in is threading.main_thread()  # the state's own restore: on the loop
    assert ticks > 10  # the loop ran while the snapshot was read
    assert processor.next_offsets[0] == {f"{topic_name}:0": 7}


class Forked(Large):
    """A state whose snapshot is a chunked pickle of its (changing) document."""

    def __init__(self) -> None:
        super().__init__()
        self.document = {"entries": {f"meter-{i}": i for i in range(50_000)}}

    def snapshot(self, partition: int) -> ChunkedPickle:  # type: ignore[override]
        return ChunkedPickle(self.document)


async def test_a_snapshot_is_written_by_a_child_as_the_state_was_when_it_was_forked(
    bootstrap: str, tmp_path: Path, topic_name: str
) -> None:
    """The writer child sees the state as of the fork (copy on write), however the parent's
    fold changes it meanwhile; a writer that fails leaves the previous snapshot."""
    app = make_app(f"fork-{topic_name}", bootstrap, tmp_path / "faust", free_port())
    state = Forked()
    snapshots = Snapshots(tmp_path / "snapshots")
    processor = Processor(app, bootstrap, "forked", [topic_name], state, state, snapshots)
    processor.next_offsets[0] = {f"{topic_name}:0": 42}
    expected = {"entries": dict(state.document["entries"])}
    pid = processor._fork_write([0])
    state.document["entries"].clear()  # the fold goes on in the parent at once
    state.document["late"] = {"x": 1}
    await processor._reap(pid)
    found = snapshots.read(0)
    assert found is not None and found[0] == {f"{topic_name}:0": 42}
    assert load_chunked(found[1]) == expected
    assert not list((tmp_path / "snapshots").glob("*.tmp"))

    def broken(partition: int) -> ChunkedPickle:
        raise RuntimeError("cannot snapshot")

    state.snapshot = broken  # type: ignore[method-assign]
    processor.next_offsets[0] = {f"{topic_name}:0": 99}
    await processor._reap(processor._fork_write([0]))  # logged; the previous file stays
    found = snapshots.read(0)
    assert found is not None and found[0] == {f"{topic_name}:0": 42}


def test_temporary_files_of_writers_gone_are_removed_and_a_running_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "0.999999999.tmp").write_bytes(b"torn")  # no such process
    (tmp_path / "0.tmp").write_bytes(b"torn")  # written before the pid was in the name
    mine = tmp_path / f"1.{os.getpid()}.tmp"
    mine.write_bytes(b"being written")
    Snapshots(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]
