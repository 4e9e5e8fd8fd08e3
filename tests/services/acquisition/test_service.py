"""End to end: simulator over TCP → acquisition service → real broker (scheduled and on-demand
reads, relay trip, lost contact and recovery, corrupted bytes)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from libs.events.acquisition import (
    MeterLostContact,
    MeterOnline,
    MeterRegistered,
    Rate,
    ReadingRecorded,
    SwitchState,
)
from libs.events.base import utcnow
from libs.events.control import Action, CommandAcknowledged, CommandFailed, CommandRequested, CommandSent
from libs.protocols.simulator.faults import LinkFault
from services.acquisition.engine import EngineConfig
from services.acquisition.schedule import Cron, JobKind, Schedule
from tests.broker.kafka_helpers import producer

from .helpers import E1, Collector, engine_config, running_service, running_site

pytestmark = pytest.mark.slow


async def test_scheduled_and_on_demand_reads_and_relay_trip(bootstrap: str, tmp_path: Path) -> None:
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        meters = [loc.meter.id for loc in run.service.registry.all_meters()]
        await seen.wait_for(lambda: all(len(seen.of(ReadingRecorded, meter_id=m)) >= 2 for m in meters))
        for meter_id in meters:
            readings = seen.of(ReadingRecorded, meter_id=meter_id, causation_id=None)
            state = site.meter(meter_id).state
            register = "volume_m3" if meter_id.startswith("w/") else "active_import_kwh"
            assert readings[0].registers[register][Rate.TOTAL] == pytest.approx(Decimal(str(state.total)))
            assert [r.sequence for r in readings] == list(range(1, len(readings) + 1))
            assert all(r.route.bus_id == meter_id.split("/")[0] and not r.route.failover for r in readings)
            assert all(r.received_at <= utcnow() for r in readings)
        assert seen.of(ReadingRecorded, meter_id=E1)[0].instant["voltage_a_v"] > 0
        registered = seen.of(MeterRegistered)
        assert sorted(e.meter_id for e in registered) == sorted(meters)  # the topology, once each

        read_cmd = CommandRequested(
            project_id=run.project_id, subject_id=E1, command_id="cmd-read", meter_id=E1,
            action=Action.READ, requested_by="op", reason="test",
        )  # fmt: skip
        trip = CommandRequested(
            project_id=run.project_id, subject_id=E1, command_id="cmd-trip", meter_id=E1,
            action=Action.TRIP, requested_by="op", reason="arrears",
            expires_at=utcnow() + timedelta(minutes=5),
        )  # fmt: skip
        stale = trip.model_copy(
            update={"command_id": "cmd-old", "expires_at": utcnow() - timedelta(seconds=1)}
        )
        # the same meter id in another project (ids repeat across tenants): not this site's meter
        foreign = trip.model_copy(update={"project_id": "another-project", "command_id": "cmd-foreign",
                                          "event_id": "foreign", "action": Action.CLOSE})  # fmt: skip
        read_after = read_cmd.model_copy(update={"command_id": "cmd-read-2", "event_id": "read-2"})
        async with producer(bootstrap) as p:
            for cmd in (read_cmd, trip, stale, trip, foreign, read_after):  # the trip twice: harmless
                await p.send_and_wait(cmd.TOPIC, run.service.outbox.codec.encode(cmd), key=cmd.key)
        await seen.wait_for(lambda: seen.of(ReadingRecorded, causation_id="read-2"))  # one meter: in order
        on_demand = seen.of(ReadingRecorded, causation_id=read_cmd.event_id)
        assert len(on_demand) == 1 and on_demand[0].registers["active_import_kwh"][Rate.TOTAL] == Decimal(
            "100"
        )
        assert [e.command_id for e in seen.of(CommandSent)] == ["cmd-read", "cmd-trip", "cmd-read-2"]
        ack = seen.of(CommandAcknowledged, command_id="cmd-trip")
        assert len(ack) == 1 and ack[0].confirmed_state == SwitchState.OPEN.value
        assert ack[0].causation_id == trip.event_id
        assert site.meter(E1).state.relay_closed is False
        assert not seen.of(CommandSent, command_id="cmd-old")
        await seen.close()


async def test_lost_contact_recovery_and_corrupted_bytes_retried(bootstrap: str, tmp_path: Path) -> None:
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        await seen.wait_for(lambda: seen.of(MeterOnline, meter_id=E1))
        site.set_link_fault("m", LinkFault("corrupt", count=1))
        site.set_offline(E1)
        lost = await seen.wait_for(lambda: seen.of(MeterLostContact, meter_id=E1))
        assert lost[0].consecutive_failures == 2
        assert not seen.of(MeterLostContact, meter_id="e/000000000002")
        stats = run.service.engine.workers["m"].links[None].bus.stats
        assert stats.bad_frames >= 1 and stats.retries >= 1
        site.set_offline(E1, False)
        await seen.wait_for(lambda: len(seen.of(MeterOnline, meter_id=E1)) == 2)
        assert not seen.of(MeterLostContact, meter_id="m/1")  # the corrupted reply was retried
        await seen.close()


async def test_daily_frozen_values_are_read_back_and_labelled(bootstrap: str, tmp_path: Path) -> None:
    plans = {
        "default": (
            Schedule(kind=JobKind.READ, trigger=Cron(expression="0 0 1 1 *")),  # routine reads out of the way
            Schedule(kind=JobKind.FROZEN_DAILY, trigger=Cron(expression="* * * * * */2")),
        )
    }
    config = engine_config()
    config = EngineConfig(plans=plans, comm=config.comm, timing=config.timing, read_at_start=False)
    async with running_site() as site:
        state = site.meter(E1).state
        state._freeze(utcnow())  # the midnight freeze the meter would have taken
        snap = next(iter(state.frozen_daily.values()))
        day = snap.at.date()  # labelled by the freeze moment's date (DL/T 645 05060001)
        async with running_service(site, bootstrap, tmp_path, config) as run:
            seen = Collector(bootstrap, run.project_id).start()
            frozen = await seen.wait_for(lambda: seen.of(ReadingRecorded, meter_id=E1, frozen=f"daily:{day}"))
            registers = frozen[0].registers["active_import_kwh"]
            assert registers[Rate.TOTAL] == pytest.approx(Decimal(str(snap.total)))
            assert not seen.of(ReadingRecorded, meter_id=E1, frozen=None)  # no live read was due
            await seen.close()


async def test_a_command_for_another_bus_is_not_held_behind_a_slow_one(
    bootstrap: str, tmp_path: Path
) -> None:
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        await seen.wait_for(lambda: seen.of(MeterOnline, meter_id="m/1"))
        site.set_offline(E1)  # its trip will time out and be retried on bus "e"

        def trip(meter_id: str, command_id: str) -> CommandRequested:
            return CommandRequested(
                project_id=run.project_id, subject_id=meter_id, command_id=command_id, meter_id=meter_id,
                action=Action.TRIP, requested_by="op", reason="test",
            )  # fmt: skip

        async with producer(bootstrap) as p:
            slow, fast = trip(E1, "cmd-slow"), trip("m/1", "cmd-fast")
            await p.send_and_wait(slow.TOPIC, run.service.outbox.codec.encode(slow), key=slow.key)
            await seen.wait_for(lambda: seen.of(CommandSent, command_id="cmd-slow"))
            await p.send_and_wait(fast.TOPIC, run.service.outbox.codec.encode(fast), key=fast.key)
        [failed] = await seen.wait_for(lambda: seen.of(CommandFailed, command_id="cmd-slow"))
        [acked] = await seen.wait_for(lambda: seen.of(CommandAcknowledged, command_id="cmd-fast"))
        assert acked.time < failed.time  # bus "m" did not wait for the retries on bus "e"
        await seen.close()


async def test_parameter_download_is_written_and_read_back(bootstrap: str, tmp_path: Path) -> None:
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        await seen.wait_for(lambda: seen.of(MeterOnline, meter_id=E1))

        def download(command_id: str, meter_id: str, **params: str) -> CommandRequested:
            return CommandRequested(
                project_id=run.project_id, subject_id=meter_id, command_id=command_id, meter_id=meter_id,
                action=Action.SET_PARAMETER, requested_by="policy:parameters", reason="tariff v2",
                params={"operation": "parameters", "effective_from": "2026-11-21T00:00:00+08:00", **params},
            )  # fmt: skip

        prices = download(
            "p-ok", E1, **{"price.peak": "56.83", "price.valley": "28.83", "alarm1_fen": "2500"}
        )
        tiers = download("p-tier", E1, **{"price.total": "52.83", "tier.1.up_to": "240", "tier.1.surcharge": "0",
                                          "tier.2.up_to": "400", "tier.2.surcharge": "5",
                                          "tier.3.up_to": "", "tier.3.surcharge": "30"})  # fmt: skip
        too_many = download("p-tier8", E1, **{"tier.7.up_to": "9000", "tier.7.price": "80"})
        modbus = download("p-mb", "m/1", **{"price.total": "50"})
        async with producer(bootstrap) as p:
            for cmd in (prices, tiers, too_many, modbus):
                await p.send_and_wait(cmd.TOPIC, run.service.outbox.codec.encode(cmd), key=cmd.key)
        [ack] = await seen.wait_for(lambda: seen.of(CommandAcknowledged, command_id="p-ok"))
        assert ack.confirmed_state == "04001001=25.00,04050102=0.5683,04050104=0.2883"
        state = site.meter(E1).state
        assert state.tariff_prices["peak"] == pytest.approx(0.5683)
        assert state.tariff_prices["valley"] == pytest.approx(0.2883)
        assert state.settings["alarm_amount_1_limit"] == Decimal("25.00")
        [tiered] = await seen.wait_for(lambda: seen.of(CommandAcknowledged, command_id="p-tier"))
        assert tiered.confirmed_state == (  # 阶梯值 1-2 (kWh) and 阶梯电价 1-3 (yuan/kWh)
            "04050101=0.5283,04060001=240.00,04060002=400.00,04060101=0.0000,04060102=0.0500,04060103=0.3000"
        )
        assert state.settings["step_value_2"] == Decimal("400.00")
        assert state.settings["step_price_3"] == Decimal("0.3000")
        for command_id in ("p-tier8", "p-mb"):  # what a meter cannot hold fails, typed, not retried
            [failed] = await seen.wait_for(lambda c=command_id: seen.of(CommandFailed, command_id=c))
            assert failed.reason.startswith("unsupported") and not failed.will_retry
        await seen.close()
