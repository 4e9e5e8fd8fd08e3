"""Acquisition carries clear / initialise (C5) to simulated meters: DL/T 645-2007 meter clear
between two register reads, ``MeterReplaced(reason=cleared)`` for billing — also when the meter
falls silent after acknowledging the clear; typed refusals of what cannot be cleared."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from libs.events.acquisition import MeterOnline, MeterReplaced, Rate, ReadingRecorded, ReplacementReason
from libs.events.control import Action, CommandAcknowledged, CommandFailed, CommandRequested
from tests.broker.kafka_helpers import producer

from .helpers import E1, Collector, running_service, running_site

pytestmark = pytest.mark.slow
E3 = "e/000000000003"
WATER = "w/00000000000001"


async def test_initialise_clears_the_meter_and_reports_the_registers_for_billing(
    bootstrap: str, tmp_path: Path
) -> None:
    async with running_site() as site, running_service(site, bootstrap, tmp_path) as run:
        seen = Collector(bootstrap, run.project_id).start()
        await seen.wait_for(lambda: seen.of(MeterOnline, meter_id=E1))

        def command(command_id: str, meter_id: str, action: Action, **params: str) -> CommandRequested:
            return CommandRequested(
                project_id=run.project_id, subject_id=meter_id, command_id=command_id, meter_id=meter_id,
                action=action, requested_by="op-1", reason="move-in", params=params,
            )  # fmt: skip

        e3 = site.meter(E3).state
        clear_e3 = e3.clear

        def clear_then_fall_silent() -> None:  # the meter clears, acknowledges, then stops answering
            clear_e3()
            site.set_offline(E3)

        e3.clear = clear_then_fall_silent  # type: ignore[method-assign]
        commands = [
            command("init", E1, Action.INITIALISE),
            command("silent", E3, Action.CLEAR),
            command("bad-operator", "e/000000000002", Action.CLEAR, operator_code="operator-1"),
            command("water", WATER, Action.CLEAR),
        ]
        async with producer(bootstrap) as p:
            for cmd in commands:
                await p.send_and_wait(cmd.TOPIC, run.service.outbox.codec.encode(cmd), key=cmd.key)
        [ack] = await seen.wait_for(lambda: seen.of(CommandAcknowledged, command_id="init"))
        assert ack.confirmed_state == "initialised"
        [replaced] = seen.of(MeterReplaced, meter_id=E1)
        assert replaced.reason is ReplacementReason.CLEARED and replaced.new_address == "000000000001"
        final = replaced.final_registers["active_import_kwh"]
        assert final[Rate.TOTAL] == Decimal(100) and set(final) == set(Rate)  # as before the clear
        assert set(replaced.initial_registers["active_import_kwh"].values()) == {Decimal(0)}
        assert replaced.replaced_at <= ack.time  # no meter clock configured: the read-back's arrival
        state = site.meter(E1).state
        assert (state.total, state.clear_count) == (0.0, 1)
        await seen.wait_for(  # scheduled reads go on, from zero
            lambda: [
                r
                for r in seen.of(ReadingRecorded, meter_id=E1)
                if r.received_at > ack.time and r.registers["active_import_kwh"][Rate.TOTAL] == 0
            ]
        )
        for command_id, reason in (("bad-operator", "unsupported: operator_code"), ("water", "unsupported")):
            [failed] = await seen.wait_for(lambda c=command_id: seen.of(CommandFailed, command_id=c))
            assert failed.reason.startswith(reason) and not failed.will_retry
        assert site.meter("e/000000000002").state.clear_count == 0
        # Cleared but not read back: billing still learns of it, from the zeros the clear left.
        [lost] = await seen.wait_for(lambda: seen.of(CommandFailed, command_id="silent"))
        assert lost.reason.startswith("no_reply")  # control retries it; a retry clears again
        [silent] = seen.of(MeterReplaced, meter_id=E3)
        assert silent.final_registers["active_import_kwh"][Rate.TOTAL] == Decimal(300)
        assert set(silent.initial_registers["active_import_kwh"].values()) == {Decimal(0)}
        assert (e3.total, e3.clear_count) == (0.0, 1)
        assert len(seen.of(MeterReplaced)) == 2
        await seen.close()
