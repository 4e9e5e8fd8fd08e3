"""Billing on the real broker with poison on every input: undecodable bytes on each topic and two
tariffs it cannot parse. Each is parked on mf.dead-letter with its reason, billing goes on (a
recharge moves a balance), /readyz stays ready and counts them, and the readings of the bad
tariffs' accounts wait: a corrected version releases one account's; for the other the cause is
fixed outside the log (the time zone its tariff names is installed) and `meterflow dead-letter
retry` re-drives the parked tariff, after which its waiting readings are charged."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from libs.events.topics import CATALOGUE
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from services.billing import router
from services.billing.testing import live_balances, produce
from services.billing.worker import INPUTS
from tests.deadletters import cli, letters_until, send_junk
from tests.processes import stop
from tests.services.billing.helpers import SINGLE, P, account, at, meter, reading, recharge, tariff

pytestmark = pytest.mark.slow
ZONE = "Mf/Site"  # not a zone any tzdata has: installed by the test to "fix the cause"


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def test_billing_parks_poison_goes_on_and_a_retry_after_the_fix_charges_the_waiting_readings(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    zones = tmp_path / "zones"
    zones.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(tmp_path / "state"),
               MF_BILLING_HTTP_PORT=str(port), MF_BILLING_FAUST_PORT=str(free_port()),
               MF_BILLING_SNAPSHOT_EVERY_S="1", PYTHONTZPATH=f"{zones}{os.pathsep}/usr/share/zoneinfo")  # fmt: skip
    magic = tariff({"kind": "magic"}, tid="t1")
    zoned = tariff({**SINGLE, "timezone": ZONE}, tid="t2")
    a2 = {
        "event_id": "open-a2",
        "subject_id": "a2",
        "account_id": "a2",
        "meter_ids": ("m2",),
        "tariff_id": "t2",
    }
    facts = [
        magic, zoned, meter("m1"), meter("m2"), account(), account().model_copy(update=a2),
        recharge(10_000, "r1"),
        recharge(10_000, "r2").model_copy(update={"subject_id": "a2", "account_id": "a2"}),
        reading(at(2024, 1, 2), 100, "m1"), reading(at(2024, 1, 3), 110, "m1"),
        reading(at(2024, 1, 2), 100, "m2"), reading(at(2024, 1, 3), 120, "m2"),
    ]  # fmt: skip
    log = tmp_path / "billing.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "services.cli", "billing"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)  # fmt: skip

    def balances() -> dict[tuple[str, str], int]:
        return asyncio.run(live_balances(bootstrap, P))

    try:
        # the router's inputs and the books' (mf.billing-in): each processor parks what it reads
        junk = asyncio.run(send_junk(bootstrap, (*router.INPUTS, *INPUTS)))
        asyncio.run(produce(bootstrap, facts))
        # the recharges after the poison are folded; the readings wait for valid tariffs
        wait_for(lambda: balances() == {(P, "a1"): 10_000, (P, "a2"): 10_000}, "the recharges", log)
        letters = letters_until(bootstrap, 8)
        assert len(letters) == 8, log.read_text()[-4000:]
        by_topic = {(le.topic, le.headers["error_type"]): le for le in letters}
        for topic, (partition, offset) in junk.items():
            letter = by_topic[(topic, "EventDecodeError")]
            assert letter.value == b"\xffnot an event"
            assert letter.service == ("billing" if topic in INPUTS else "billing-router")
            assert letter.headers["source"] == f"{topic}[{partition}]@{offset}"
        bad = [le for le in letters if le.headers["error_type"] == "TariffError"]
        # refused at the door by the router, once (not in each partition's books)
        assert [(le.topic, le.service) for le in bad] == [("mf.tariffs", "billing-router")] * 2
        assert "invalid tariff definition" in bad[0].headers["reason"] and "kind" in bad[0].headers["reason"]
        assert "unknown timezone" in bad[1].headers["reason"]
        time.sleep(2)  # the readings really wait: nothing is charged without a valid tariff
        assert balances() == {(P, "a1"): 10_000, (P, "a2"): 10_000}

        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["dead_letters"] == 8
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "mf_billing_dead_letters_total 8.0" in metrics
        status = json.loads(cli(bootstrap, tmp_path / "cli", "status", "--json").stdout)
        assert status["broker"]["dead_letters"] == {
            "billing": {"dead_letters": 1, "not_retried": 1},
            "billing-router": {"dead_letters": 7, "not_retried": 7},
        }

        # a corrected version of t1 releases a1's readings: 10 kWh at 50 fen
        asyncio.run(
            produce(bootstrap, [tariff(SINGLE, tid="t1").model_copy(update={"event_id": "t1-v1-fixed"})])
        )
        wait_for(lambda: balances()[(P, "a1")] == 9_500, "a1 charged", log)

        # t2's cause is fixed outside the log (its zone installed), then the letter is re-driven
        (zones / "Mf").mkdir()
        shutil.copy("/usr/share/zoneinfo/Asia/Shanghai", zones / ZONE)
        result = cli(bootstrap, tmp_path / "cli", "dead-letter", "retry", str(bad[1].id))
        assert result.returncode == 0, result.stdout + result.stderr
        wait_for(lambda: balances()[(P, "a2")] == 9_000, "a2 charged after the retry", log)  # 20 kWh
        listed = json.loads(cli(bootstrap, tmp_path / "cli", "dead-letter", "list", "--json").stdout)
        assert [r["id"] for r in listed if r["retried"]] == [bad[1].id]
        assert len(listed) == 8  # the retried tariff folded: nothing parked again
        assert balances() == {(P, "a1"): 9_500, (P, "a2"): 9_000}
    finally:
        stop(worker)
