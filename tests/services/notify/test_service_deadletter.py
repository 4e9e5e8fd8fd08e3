"""Notify's decider on the real broker with poison on every input: undecodable bytes on each topic
and a command attempt numbered "²" (``isdigit()`` says yes, ``int()`` raises). Each is parked on
mf.dead-letter with its reason, a recharge after them is still told, and /readyz stays ready and
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

from libs.events import AccountOpened, BalanceChanged, CommandRequested, NotificationRequested
from libs.events.billing import BillingMode
from libs.events.control import Action
from libs.events.topics import CATALOGUE, COMMANDS, NOTIFICATIONS
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from services.notify.worker import INPUTS
from tests.deadletters import events_on, letters_until, send_junk
from tests.processes import stop
from tests.services.notify.helpers import produce

pytestmark = pytest.mark.slow


def test_notify_parks_poison_and_still_tells_a_recharge(fresh_broker: EmbeddedBroker, tmp_path: Path) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(tmp_path / "state"), MF_NOTIFY_HTTP_PORT=str(port),
               MF_NOTIFY_FAUST_PORT=str(free_port()), MF_NOTIFY_SNAPSHOT_EVERY_S="1")  # fmt: skip
    poison = CommandRequested(project_id="p", subject_id="m-1", command_id="c-x", meter_id="m-1", action=Action.CLOSE,
                              requested_by="policy:prepaid", reason="retry",
                              params={"retry_of": "c-1", "attempt": "²"})  # fmt: skip
    opened = AccountOpened(project_id="p", subject_id="acc-1", account_id="acc-1", mode=BillingMode.PREPAID,
                           meter_ids=("m-1",), tariff_id="t", holder="张三", phone="+8613800138000",
                           wechat_openid=None, opened_by="op")  # fmt: skip
    recharge = BalanceChanged(project_id="p", subject_id="acc-1", account_id="acc-1", delta_fen=5000,
                              balance_fen=6234, reason="recharge", causation_id="recharge-1")  # fmt: skip
    log = tmp_path / "notify.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "services.cli", "notify"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        junk = asyncio.run(send_junk(bootstrap, INPUTS))
        asyncio.run(produce(bootstrap, [poison, opened]))
        time.sleep(1)  # the account first: a recharge before it waits (and is told then)
        asyncio.run(produce(bootstrap, [recharge]))
        letters = letters_until(bootstrap, len(INPUTS) + 1)
        assert len(letters) == len(INPUTS) + 1, log.read_text()[-4000:]
        for topic, (partition, offset) in junk.items():
            (letter,) = [le for le in letters if le.headers["source"] == f"{topic}[{partition}]@{offset}"]
            assert letter.service == "notify" and letter.headers["error_type"] == "EventDecodeError"
        (bad,) = [le for le in letters if le.headers["error_type"] == "ValueError"]
        assert bad.topic == COMMANDS.name and "invalid literal for int()" in bad.headers["reason"]

        def told() -> list[NotificationRequested]:
            events = asyncio.run(events_on(bootstrap, NOTIFICATIONS.name))
            return [e for e in events if isinstance(e, NotificationRequested)]

        deadline = time.monotonic() + 60
        while not told() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [r.template for r in told()] == ["recharge_arrived"], log.read_text()[-4000:]
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["dead_letters"] == len(INPUTS) + 1
        assert (
            f"mf_notify_dead_letters_total {len(INPUTS) + 1}.0"
            in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        )
    finally:
        stop(worker)
