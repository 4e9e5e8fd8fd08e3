"""C5 end to end: a batch ``clear`` through the control worker (a process of its own) and the
acquisition service, on a real broker, to simulated DL/T 645-2007 meters over TCP.

Each meter's clear ends ``succeeded`` in the batch fold, the simulator's registers are zero, and
acquisition publishes ``MeterReplaced(reason=cleared)`` with the registers read before the clear.
A meter whose password the platform has wrong refuses (DAH): ``failed`` with a typed reason, not
retried; a Modbus meter has no such command: ``failed``, ``unsupported``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from libs.events.acquisition import MeterReplaced, Rate, ReplacementReason
from libs.events.base import utcnow
from libs.events.control import (
    Action,
    BatchRequested,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    Operation,
)
from libs.stack.broker import EmbeddedBroker, free_port
from services.control.domain import batch as batches
from services.control.domain.batch import Outcome
from tests.services.acquisition.helpers import Collector, running_service, running_site
from tests.services.control.test_service import get, produce, start_worker, stop

pytestmark = pytest.mark.slow
E1, E2, E3, MB = "e/000000000001", "e/000000000002", "e/000000000003", "m/1"


async def test_batch_clear_succeeds_per_meter_and_reports_the_registers_before_it(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap, port = fresh_broker.bootstrap, free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(tmp_path / "state"), MF_CONTROL_HTTP_PORT=str(port),
               MF_CONTROL_FAUST_PORT=str(free_port()), MF_CONTROL_TICK_S="0.2", MF_CONTROL_BACKOFF_S="1",
               MF_CONTROL_MAX_ATTEMPTS="3", MF_CONTROL_ATTEMPT_TIMEOUT_S="20")  # fmt: skip
    (tmp_path / "acq").mkdir()
    async with running_site() as site, running_service(site, bootstrap, tmp_path / "acq") as run:
        worker = start_worker(env, tmp_path / "control.log")
        seen = Collector(bootstrap, run.project_id).start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                await get(http, "/readyz", within=60)
                e3 = site.meter(E3)
                e3.model = e3.model.model_copy(update={"password": "99999999"})  # the platform's is wrong
                request = BatchRequested(
                    project_id=run.project_id, subject_id="b-clear", batch_id="b-clear", operation=Operation.CLEAR,
                    meter_ids=(E1, E2, E3, MB), operator_id="op-1", reason="move-in", time=utcnow(),
                    params={"operator_code": "00000042"},
                )  # fmt: skip
                await produce(bootstrap, [request])
                ids = {m: batches.command_id(request, m) for m in request.meter_ids}
                await seen.wait_for(
                    lambda: len(seen.of(CommandAcknowledged) + seen.of(CommandFailed)) >= 4, within=60
                )
                await asyncio.sleep(3)  # a retry (backoff 1 s) would have been requested by now

                commands = [e for e in seen.of(CommandRequested) if e.correlation_id == "b-clear"]
                assert sorted((c.meter_id, c.action) for c in commands) == [
                    (m, Action.CLEAR) for m in sorted(request.meter_ids)
                ]  # one each: the refusals were not retried
                state = batches.start(request)
                for event in seen.events:
                    state = batches.apply(state, event)
                assert batches.results(state) == {
                    E1: Outcome.SUCCEEDED, E2: Outcome.SUCCEEDED, E3: Outcome.FAILED, MB: Outcome.FAILED,
                }  # fmt: skip
                for meter_id in (E1, E2):
                    assert site.meter(meter_id).state.total == 0.0  # the manual clock stood still
                    assert site.meter(meter_id).state.clear_count == 1
                    view = await get(http, f"/commands/{ids[meter_id]}")
                    assert view["status"] == "acknowledged" and view["requested_by"] == "op-1"
                replaced: list[MeterReplaced] = seen.of(MeterReplaced)
                assert sorted(r.meter_id for r in replaced) == [E1, E2]
                for r in replaced:
                    assert r.reason is ReplacementReason.CLEARED and r.old_address == r.new_address
                    kwh = 100 * int(r.meter_id[-1])  # the site's starting totals
                    assert r.final_registers["active_import_kwh"][Rate.TOTAL] == Decimal(kwh)
                    assert set(r.initial_registers["active_import_kwh"].values()) == {Decimal(0)}
                    assert r.causation_id == next(c.event_id for c in commands if c.meter_id == r.meter_id)
                (refused,) = seen.of(CommandFailed, command_id=ids[E3])
                assert refused.reason.startswith("rejected") and "unauthorised" in refused.reason
                (unsupported,) = seen.of(CommandFailed, command_id=ids[MB])
                assert unsupported.reason.startswith("unsupported")
                assert site.meter(E3).state.total == 300.0 and site.meter(E3).state.clear_count == 0
                assert (await get(http, f"/commands/{ids[E3]}"))["status"] == "failed"
                assert not [c for c in seen.of(CommandRequested) if "retry_of" in c.params]
        finally:
            await seen.close()
            stop(worker)
            if worker.returncode not in (0, -signal.SIGTERM):
                print((tmp_path / "control.log").read_text()[-4000:])
