"""The replay tracker shared by control and billing (libs/stack/catchup.py)."""

from __future__ import annotations

import asyncio

from libs.stack.catchup import CatchUp


async def test_the_replay_ends_when_every_partition_reaches_its_end_at_restore() -> None:
    async def ends() -> dict[str, int]:
        return {"t:0": 3, "t:1": 1}

    catchup = CatchUp("test", ends, quiet_s=60)
    catchup.begin({"t:0": 1})  # the snapshot had applied offset 0
    assert catchup.replaying and not catchup.finished()  # the ends are still being read
    await asyncio.sleep(0)
    assert catchup.ends == {"t:0": 3, "t:1": 1}
    assert catchup.note("t", 0, 1) and catchup.note("t", 0, 2)  # read again: historic
    assert not catchup.finished()  # t:1 not yet
    assert catchup.note("t", 1, 0)
    assert catchup.finished() and not catchup.replaying
    assert not catchup.finished()  # once
    assert not catchup.note("t", 0, 3)  # news
    assert catchup.positions == {"t:0": 4, "t:1": 1}


async def test_a_replay_without_end_offsets_ends_when_quiet_and_a_late_read_is_dropped() -> None:
    release = asyncio.Event()

    async def slow_ends() -> dict[str, int]:
        await release.wait()
        return {"t:0": 100}

    async def failing() -> dict[str, int]:
        raise OSError("broker unreachable")

    catchup = CatchUp("test", slow_ends, quiet_s=0.05)
    catchup.begin({})
    catchup.begin({})  # a second restore before the first read came back
    release.set()
    await asyncio.sleep(0.01)
    assert catchup.ends == {"t:0": 100}  # the second read's; the first was dropped, not mixed
    await asyncio.sleep(0.06)
    assert catchup.finished()  # quiet: the last records never came
    broken = CatchUp("test", failing, quiet_s=0.01)
    broken.begin({})
    await asyncio.sleep(0.02)
    assert broken.ends is None and broken.finished()
    never = CatchUp("test", None, quiet_s=60)
    never.begin({"t:0": 5})
    assert not never.replaying and not never.note("t", 0, 0) and not never.finished()
    never.reset()
    assert never.positions == {} and not never.replaying
