"""Failover (A7) and Kafka outage, end to end against the simulator and a real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from libs.events.acquisition import ConcentratorOffline, ReadingRecorded, RouteSwitched
from libs.events.topics import CATALOGUE
from libs.protocols.simulator.runtime import Site
from libs.stack.broker import BrokerError, EmbeddedBroker, check_reachable, ensure_topics
from libs.stack.outbox import Outbox
from services.acquisition.importer import import_topology
from services.acquisition.registry import Registry

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


def imported_registry(site: Site, tmp_path: Path) -> Callable[[str], Registry]:
    """The simulator's c1/c2 written out as the CSV files a site would import (备用集中器, 备用通道)."""
    lines = {line["bus"]: line for line in site.endpoints()}
    e, w = lines["e"], lines["w"]
    assert e["alternate"]["concentrator"] == "c2"
    (tmp_path / "concentrators.csv").write_text(
        f"集中器编号,IP地址,备用集中器\nc1,{e['tcp']},c2\nc2,{w['tcp']},c1\n", encoding="utf-8"
    )
    rows = [
        f"e/{address},{address},DL/T645-2007,电表,c1,{e['tcp']},2400,偶,c2@{e['alternate']['tcp']}"
        for address in e["meters"]
    ]
    rows.append(f"w/00000000000001,00000000000001,CJ/T188,水表,c2,{w['tcp']},2400,偶,")
    (tmp_path / "meters.csv").write_text(
        "\n".join(["电表编号,表地址,规约,类型,集中器,端口,波特率,校验位,备用通道", *rows]) + "\n",
        encoding="utf-8",
    )

    def build(project_id: str) -> Registry:
        at = datetime(2024, 3, 1, tzinfo=UTC)
        return import_topology(
            project_id, tmp_path / "concentrators.csv", tmp_path / "meters.csv", at
        ).registry

    return build


async def test_failover_of_an_imported_topology(bootstrap: str, tmp_path: Path) -> None:
    async with running_site() as site:
        registry = imported_registry(site, tmp_path)
        async with running_service(site, bootstrap, tmp_path, registry=registry) as run:
            (bus,) = run.service.registry.buses_of("c1")
            assert [r.concentrator_id for r in bus.alternate_routes] == ["c2"]
            seen = Collector(bootstrap, run.project_id).start()
            await seen.wait_for(lambda: seen.of(ReadingRecorded, meter_id=E1))
            site.set_dead("c1")
            switched = await seen.wait_for(lambda: seen.of(RouteSwitched, meter_id=E1))
            assert switched[0].to_route.via == ("c2",) and switched[0].to_route.failover
            failover = await seen.wait_for(
                lambda: [r for r in seen.of(ReadingRecorded, meter_id=E1) if r.route.failover]
            )
            assert failover[0].route.via == ("c2",)
            await seen.close()


async def settle(collector: Collector, outbox: Outbox, quiet: float = 2.0, within: float = 40) -> None:
    """Wait until the collector has seen no new reading for ``quiet`` s (failed reads of dead
    concentrators keep flowing, so only readings count) and no reading waits in the outbox."""
    last, since = -1, time.monotonic()
    async with asyncio.timeout(within):
        while True:
            count = len(collector.of(ReadingRecorded))
            waiting = outbox.db.execute("SELECT count(*) FROM outbox WHERE packable = 1").fetchone()[0]
            if count != last or waiting:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            await asyncio.sleep(0.1)


class _BrokerBroke(Exception):
    """The restarted embedded broker stopped accepting connections (docs/architecture.md)."""


async def test_kafka_outage_buffers_and_delivers_once(fresh_broker: EmbeddedBroker, tmp_path: Path) -> None:
    try:
        await _outage(fresh_broker, tmp_path)
    except BaseException as exc:  # the service's shutdown, with no broker to talk to, may mask it
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, _BrokerBroke):
            cause = cause.__context__
        if cause is not None:
            pytest.xfail("embedded Tansu stopped accepting connections after AlreadyExists on produce")
        raise


async def _outage(fresh_broker: EmbeddedBroker, tmp_path: Path) -> None:
    bootstrap = fresh_broker.bootstrap
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        await seen.wait_for(lambda: len(seen.of(ReadingRecorded, meter_id=E1)) >= 1)
        # quiet the site so that everything acknowledged by the old broker is also consumed
        site.set_dead("c1")
        site.set_dead("c2")
        await settle(seen, run.service.outbox)
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
            try:
                await after.wait_for(lambda: len(after.of(ReadingRecorded)) >= waiting // 2, within=40)
            except TimeoutError:
                try:  # our outbox did not deliver, or the embedded broker broke (docs/architecture.md)
                    await asyncio.to_thread(check_reachable, bootstrap, 2.0)
                except BrokerError:
                    raise _BrokerBroke from None
                raise
            run.stop.set()
            await asyncio.wait_for(run.task, 30)
            await settle(after, outbox)
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
