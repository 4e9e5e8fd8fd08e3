"""Control on the real broker with poison on every input: undecodable bytes on each topic and a
command attempt whose number is not a number (its fold raises). Each is parked on mf.dead-letter
with its reason, an arrears alarm after them still trips the meter, and /readyz stays ready and
counts them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from libs.events import AccountOpened, AlarmRaised
from libs.events.base import utcnow
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import Action, CommandRequested
from libs.events.topics import CATALOGUE, COMMANDS, CONTROL_IN
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from services.control import router
from services.control.worker import INPUTS
from tests.deadletters import events_on, letters_until, send_junk
from tests.processes import stop
from tests.services.notify.helpers import produce

pytestmark = pytest.mark.slow
P = "p-dead"
PARKED = len(router.INPUTS) + len(INPUTS) + 1  # junk on every input of both processors, and the poison


def test_control_parks_poison_and_still_trips_a_meter_in_arrears(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(tmp_path / "state"), MF_CONTROL_HTTP_PORT=str(port),
               MF_CONTROL_FAUST_PORT=str(free_port()), MF_CONTROL_SNAPSHOT_EVERY_S="1")  # fmt: skip
    envelope = {"project_id": P, "time": utcnow()}
    poison = CommandRequested(**envelope, subject_id="m1", command_id="c-x", meter_id="m1", action=Action.TRIP,
                              requested_by="policy:prepaid", reason="retry",
                              params={"retry_of": "c-1", "attempt": "x"})  # fmt: skip
    opened = AccountOpened(**envelope, subject_id="a1", account_id="a1", mode=BillingMode.PREPAID, meter_ids=("m1",),
                           tariff_id="t", holder="h", opened_by="op")  # fmt: skip
    arrears = AlarmRaised(**envelope, subject_id="a1", alarm_id="arrears-a1", kind=AlarmKind.ARREARS, severity=3,
                          message="arrears", details={"meter_ids": "m1"})  # fmt: skip
    log = tmp_path / "control.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "services.cli", "control"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        # the router's inputs and the per-meter state's: each processor parks what it reads
        junk = asyncio.run(send_junk(bootstrap, (*router.INPUTS, *INPUTS)))
        asyncio.run(produce(bootstrap, [poison, opened, arrears]))
        letters = letters_until(bootstrap, PARKED)
        assert len(letters) == PARKED, log.read_text()[-4000:]
        for topic, (partition, offset) in junk.items():
            (letter,) = [le for le in letters if le.headers["source"] == f"{topic}[{partition}]@{offset}"]
            assert letter.service == ("control" if topic in INPUTS else "control-router")
            assert letter.headers["error_type"] == "EventDecodeError"
        (bad,) = [le for le in letters if le.headers["error_type"] == "ValueError"]
        # routed to its meter's partition, then folded (and parked) there
        assert bad.topic == CONTROL_IN.name and "invalid literal for int()" in bad.headers["reason"]

        def trips() -> list[CommandRequested]:
            events = asyncio.run(events_on(bootstrap, COMMANDS.name))
            return [e for e in events if isinstance(e, CommandRequested) and e.requested_by == "policy:prepaid"
                    and e.command_id != "c-x"]  # fmt: skip

        deadline = time.monotonic() + 60
        while not trips() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [(c.meter_id, c.action) for c in trips()] == [("m1", Action.TRIP)], log.read_text()[-4000:]
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["ready"] and ready["dead_letters"] == PARKED
        assert (
            f"mf_control_dead_letters_total {PARKED}.0"
            in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        )
    finally:
        stop(worker)
