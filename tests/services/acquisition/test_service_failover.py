"""Failover (A7) and Kafka outage, end to end against the simulator and a real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from libs.events.acquisition import ConcentratorOffline, ReadingRecorded, RouteSwitched
from libs.events.topics import CATALOGUE
from libs.stack.broker import EmbeddedBroker, ensure_topics

from .helpers import E1, Collector, running_service, running_site

pytestmark = pytest.mark.slow


async def test_failover_through_alternate_concentrator_and_switch_back(
    bootstrap: str, tmp_path: Path
) -> None:
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        await seen.wait_for(lambda: seen.of(ReadingRecorded, meter_id=E1))
        site.set_dead("c1")
        switched = await seen.wait_for(lambda: seen.of(RouteSwitched, meter_id=E1))
        assert switched[0].to_route.via == ("c2",) and switched[0].to_route.failover
        assert seen.of(ConcentratorOffline, concentrator_id="c1")
        failover = await seen.wait_for(
            lambda: [r for r in seen.of(ReadingRecorded, meter_id=E1) if r.route.failover]
        )
        assert failover[0].route.via == ("c2",)
        site.set_dead("c1", False)
        back = await seen.wait_for(lambda: len(seen.of(RouteSwitched, meter_id=E1)) == 2 and seen.events)
        assert back
        last = seen.of(RouteSwitched, meter_id=E1)[-1]
        assert not last.to_route.failover and last.from_route.via == ("c2",)
        await seen.wait_for(lambda: not seen.of(ReadingRecorded, meter_id=E1)[-1].route.failover)
        await seen.close()


async def test_kafka_outage_buffers_and_delivers_once(fresh_broker: EmbeddedBroker, tmp_path: Path) -> None:
    bootstrap = fresh_broker.bootstrap
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        await seen.wait_for(lambda: len(seen.of(ReadingRecorded, meter_id=E1)) >= 1)
        # quiet the site so that everything acknowledged by the old broker is also consumed
        site.set_dead("c1")
        site.set_dead("c2")
        await asyncio.sleep(2.5)
        before = {r.event_id: r for r in seen.of(ReadingRecorded)}
        await seen.close()
        fresh_broker.stop()
        site.set_dead("c1", False)
        site.set_dead("c2", False)
        outbox = run.service.outbox
        await asyncio.sleep(5)  # polling goes on; readings wait in the outbox
        waiting = len(outbox)
        assert waiting > 0
        new = EmbeddedBroker(port=fresh_broker.port).start()
        try:
            await asyncio.to_thread(ensure_topics, bootstrap, CATALOGUE)
            after = Collector(bootstrap, run.project_id).start()
            await after.wait_for(lambda: len(after.of(ReadingRecorded)) >= waiting // 2, within=40)
            run.stop.set()
            await asyncio.wait_for(run.task, 30)
            await asyncio.sleep(1.5)
            readings = after.of(ReadingRecorded)
            ids = [r.event_id for r in readings]
            assert len(ids) == len(set(ids)) and not set(ids) & set(before)
            for meter_id in {r.meter_id for r in readings}:
                old = [r.sequence for r in before.values() if r.meter_id == meter_id]
                seqs = sorted(r.sequence for r in readings if r.meter_id == meter_id)
                assert seqs == list(range(max(old, default=0) + 1, seqs[-1] + 1)), meter_id
            assert len(outbox) == 0
            await after.close()
        finally:
            new.stop()
