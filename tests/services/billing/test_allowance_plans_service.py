"""Allowance plans on the real broker: the billing worker, its clock moved by semesters through a
file, grants every matched account exactly one allowance per period — across a SIGKILL, a restart
that rebuilds everything from the log without a snapshot, and `meterflow billing replay`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.events import AccountOpened, AllowanceAccepted, AllowancePlanSet, Codec, TariffPublished
from libs.events.base import Event
from libs.events.billing import AllowanceCycle, BillingMode
from libs.events.topics import BILLING, CATALOGUE
from libs.stack.broker import ensure_topics, free_port, high_watermarks
from services.billing.domain import allowances
from services.billing.domain.books import Books
from services.billing.testing import live_balances, produce
from tests.processes import stop

pytestmark = pytest.mark.slow
SH = ZoneInfo("Asia/Shanghai")
P = "campus"
DORMS = ("d0", "d1", "d2")  # prepaid, on the dorm tariff: the semester plan
OFFICE = "o1"  # prepaid on the office tariff: only the monthly plan, which lists it
POSTPAID = "p1"  # on the dorm tariff but postpaid: never


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc, arg-type]


def env(eid: str, subject: str, when: datetime) -> dict[str, object]:
    return {"event_id": eid, "project_id": P, "subject_id": subject, "time": when}


def tariff(tid: str) -> TariffPublished:
    return TariffPublished(**env(f"tariff-{tid}", tid, sh(2026, 1, 1)), tariff_id=tid, version=1, name=tid,
                           effective_from=sh(2026, 1, 1), definition={"kind": "single", "price_fen": "50"})  # fmt: skip


def opened(account: str, tid: str, when: datetime, mode: BillingMode = BillingMode.PREPAID) -> AccountOpened:
    return AccountOpened(**env(f"open-{account}", account, when), account_id=account, mode=mode,
                         meter_ids=(f"m-{account}",), tariff_id=tid, holder="学生", opened_by="op")  # fmt: skip


SETUP: list[Event] = [
    tariff("dorm"), tariff("office"),
    *(opened(a, "dorm", sh(2026, 3, 1)) for a in DORMS),
    opened(OFFICE, "office", sh(2026, 3, 1)), opened(POSTPAID, "dorm", sh(2026, 3, 1), BillingMode.POSTPAID),
    AllowancePlanSet(**env("plan-semester", "semester", sh(2026, 8, 15)), plan_id="semester", amount_fen=3000,
                     cycle=AllowanceCycle.YEARLY, starts=("09-01", "02-20"), tariff_ids=("dorm",),
                     operator_id="finance", reason="free quota each semester"),
    AllowancePlanSet(**env("plan-monthly", "per-month", sh(2026, 8, 15)), plan_id="per-month", amount_fen=500,
                     cycle=AllowanceCycle.MONTHLY, account_ids=(OFFICE, POSTPAID), operator_id="finance"),
]  # fmt: skip


def expected(
    *semesters: str, months: tuple[str, ...], late: tuple[str, ...] = ()
) -> Counter[tuple[str, str]]:
    out = Counter((a, s) for a in DORMS for s in semesters)
    out.update((OFFICE, m) for m in months)
    out.update(("d-late", s) for s in late)
    return out


async def allowances_in_log(bootstrap: str) -> Counter[tuple[str, str]]:
    """(account, period) → how many ``AllowanceAccepted`` records of the project mf.billing holds."""
    tps = [TopicPartition(BILLING.name, p) for p in range(BILLING.partitions)]
    ends = await high_watermarks(bootstrap, tps)  # ListOffsets under-reports on the embedded broker
    codec, consumer = Codec(), AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: Counter[tuple[str, str]] = Counter()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    for e in codec.decode(r.value):
                        if isinstance(e, AllowanceAccepted) and e.project_id == P:
                            out[(e.account_id, e.period)] += 1
    finally:
        await consumer.stop()
    return out


class Clock:
    """The worker's clock: a file it reads at every tick."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, when: datetime) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(when.timestamp()))
        tmp.replace(self.path)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.services.billing.clocked_worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def test_a_plan_grants_each_matched_account_once_per_period_across_restarts_and_replay(
    fresh_broker: object, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap  # type: ignore[attr-defined]
    ensure_topics(bootstrap, CATALOGUE)
    clock = Clock(tmp_path / "clock")
    clock.set(sh(2026, 8, 20))
    state = tmp_path / "state"
    env, port = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}, free_port()
    env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(state), MF_BILLING_HTTP_PORT=str(port),
               MF_BILLING_FAUST_PORT=str(free_port()), MF_BILLING_SNAPSHOT_EVERY_S="1",
               MF_BILLING_ALLOWANCE_TICK_S="0.2", BILLING_CLOCK_FILE=str(clock.path))  # fmt: skip
    log = tmp_path / "billing.log"
    loop = asyncio.new_event_loop()
    fen = {**dict.fromkeys((*DORMS, "d-late"), 3000), OFFICE: 500}

    def started() -> subprocess.Popen[bytes]:
        """A worker that holds its partitions (a restart after a SIGKILL waits out the old
        member's session), given a few ticks."""
        worker = start_worker(env, log)
        deadline = time.monotonic() + 90
        while True:
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        time.sleep(2)
        return worker

    def settled(want: Counter[tuple[str, str]], within: float = 90) -> None:
        """``want`` is in the log, stays so for several ticks, and the balances show it."""
        deadline = time.monotonic() + within
        while (seen := loop.run_until_complete(allowances_in_log(bootstrap))) != want:
            assert time.monotonic() < deadline, (seen, want, log.read_text()[-3000:])
            loop.run_until_complete(asyncio.sleep(0.5))
        loop.run_until_complete(asyncio.sleep(2))
        assert loop.run_until_complete(allowances_in_log(bootstrap)) == want
        balances: dict[tuple[str, str], int] = {}
        for (account, _), n in want.items():
            balances[(P, account)] = balances.get((P, account), 0) + n * fen[account]
        while (live := loop.run_until_complete(live_balances(bootstrap, P))) != balances:
            assert time.monotonic() < deadline + 30, (live, balances)
            loop.run_until_complete(asyncio.sleep(0.5))

    loop.run_until_complete(produce(bootstrap, SETUP))
    clock.set(sh(2026, 8, 10))  # before the plans take effect (2026-08-15)
    worker = started()
    try:
        stop(worker)  # a snapshot with the plans and the accounts, and no allowance
        assert list((state / "billing" / "snapshots" / "books").glob("*.snap"))
        # As if the worker had emitted the allowances due on 2026-08-20 and died before its next
        # snapshot: restarted from that snapshot, it must find them in the log, not emit them again.
        loop.run_until_complete(produce(bootstrap, _due(SETUP, sh(2026, 8, 20))))
        clock.set(sh(2026, 8, 20))
        worker = started()
        # set on 2026-08-15, in the semester from 02-20 and in August: those are granted at once
        settled(expected("2026-S1", months=("2026-08",)))
        clock.set(sh(2026, 9, 2))
        settled(expected("2026-S1", "2026-S2", months=("2026-08", "2026-09")))
        # an account opened mid-semester gets that semester
        loop.run_until_complete(produce(bootstrap, [opened("d-late", "dorm", sh(2026, 10, 9))]))
        clock.set(sh(2026, 10, 10))
        now = expected("2026-S1", "2026-S2", months=("2026-08", "2026-09", "2026-10"), late=("2026-S2",))
        settled(now)

        worker.send_signal(signal.SIGKILL)  # restarted from whatever snapshot there is
        worker.wait()
        worker = started()
        settled(now)
        stop(worker)  # and from nothing: the whole log is folded again
        shutil.rmtree(state)
        worker = started()
        settled(now)

        clock.set(sh(2027, 3, 1))
        months = ("2026-08", "2026-09", "2026-10", "2026-11", "2026-12", "2027-01", "2027-02", "2027-03")
        settled(expected("2026-S1", "2026-S2", "2027-S1", months=months, late=("2026-S2", "2027-S1")))
    finally:
        stop(worker)
        loop.close()

    result = subprocess.run([sys.executable, "-m", "services.cli", "billing", "replay"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 differ from the live balances" in result.stdout


def _due(facts: list[Event], now: datetime) -> list[AllowanceAccepted]:
    """The allowances billing's own rules call for at ``now`` after ``facts``."""
    plans: dict[allowances.Key, allowances.Plan] = {}
    books = Books()
    for fact in facts:
        if isinstance(fact, AllowancePlanSet):
            plans = allowances.apply(plans, fact)
        else:
            books.handle(fact)
    return allowances.due(plans, books.accounts, now)
