"""End-to-end latency of prepaid control on the embedded stack, at real line timing.

The embedded broker, ``meterflow simulate`` (DL/T 645-2007 meters at 9600 8E1 answering after
50 ms), acquisition (polling those meters in the background and executing commands), billing and
control each run in their own process. Every simulated meter has a prepaid account with a small
balance. For each meter the bench publishes the reading that drives the balance into arrears and
times the chain until the simulated meter's trip is acknowledged on ``mf.commands``; then it
publishes a recharge and times the restore (close) the same way. Meanwhile a background stream
of readings for other accounts flows through billing and control: every background meter reads
once a second, published every 50 ms packed per partition as acquisition's outbox does. The
target profile runs once per background rate (default 200, 1,000 and 2,000 readings/s), so the
print shows where the machine saturates. Topics have the embedded stack's layout, one partition
each (``MF_PARTITIONS_MAX=1``, as `meterflow dev` runs; set ``MF_PARTITIONS_MAX=0`` for the
catalogue's production counts). Each run starts a fresh broker: the embedded broker's
CPU per fetch grows with the batches it holds, so figures taken minutes into a run are worse (see
docs/architecture.md, "The embedded broker's fetch cost").

Printed per direction: p50 / p99 of the end-to-end time (fact published → acknowledgement
consumed), of the part spent on the bus (acquisition's ``CommandSent`` → ``CommandAcknowledged``)
and of the rest (software: broker hops, billing, control, acquisition's consumer), plus the
stages. Targets: software p99 < 100 ms, end-to-end p99 < 1 s.

    python bench/e2e_latency.py [--buses 2] [--meters 16] [--background 200,1000,2000] [--gap 0.5]
                                [--profile target|legacy|both]

The "legacy" profile (2400 baud, replies after 20-500 ms, as many installed DL/T 645 meters
answer) is reported as it is: the incumbents promise the relay state within 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import (
    AccountOpened,
    AlarmCleared,
    AlarmRaised,
    BalanceChanged,
    Codec,
    Event,
    MeterRegistered,
    Rate,
    ReadingRecorded,
    RechargeAccepted,
    Route,
    TariffPublished,
    pack_readings,
)
from libs.events.base import utcnow
from libs.events.billing import AlarmKind, BillingMode
from libs.events.control import Action, CommandAcknowledged, CommandRequested, CommandSent
from libs.events.topics import ALARMS, CATALOGUE, COMMANDS, LEDGER, PARTITIONS_MAX, READINGS, REGISTRY_TOPIC
from libs.protocols.simulator.site import (
    BusConfig,
    ConcentratorConfig,
    Link,
    MeterConfig,
    MeterModel,
    SiteConfig,
)
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port
from libs.stack.dev import EMBEDDED_PARTITIONS_MAX
from libs.stack.processor import FETCH_MAX_WAIT_MS

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "bench"
ROUTE = Route(concentrator_id="c0", bus_id="b0")
TARIFF = {"kind": "single", "price_fen": "50"}
POLLED = ("voltage_a_v", "current_a_a", "power_kw", "relay")  # no energy: the bench drives billing
CODEC = Codec()
TICK_S = 0.05  # the background is published every 50 ms


def site(
    buses: int, meters: int, baud: int = 9600, delay_ms: tuple[float, float] = (50.0, 50.0)
) -> SiteConfig:
    """DL/T 645-2007 meters at ``baud`` 8E1 answering after ``delay_ms`` (uniform between the two)."""
    model = MeterModel(protocol="dlt645-2007", response_delay_ms=delay_ms)
    configs = [
        BusConfig(
            name=f"b{b:02d}",
            protocol="dlt645-2007",
            link=Link(baud=baud, parity="E"),
            meters=[MeterConfig(address=f"{b:04d}{i + 1:08d}", model="e") for i in range(meters)],
        )
        for b in range(buses)
    ]
    concentrators = [
        ConcentratorConfig(name=f"c{i // 4}", buses=configs[i : i + 4]) for i in range(0, buses, 4)
    ]
    return SiteConfig(name="e2e", models={"e": model}, concentrators=concentrators)


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def start_simulator(config: SiteConfig, tmp: Path) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    path = tmp / "site.json"
    path.write_text(config.model_dump_json())
    sim = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "simulate", "--site", str(path), "--base-port", "0"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert sim.stdout is not None
    lines: list[dict[str, Any]] = []
    while len(lines) < sum(len(c.buses) for c in config.concentrators):
        line = json.loads(sim.stdout.readline())
        if "bus" in line:
            lines.append(line)
    return sim, lines


def acquisition_child(site_path: str, lines_path: str) -> None:
    """Acquisition over the bench's site (the simulator file alone implies the default site)."""
    from libs.settings import load
    from services.acquisition.service import AcquisitionService
    from services.acquisition.settings import AcquisitionSettings
    from services.acquisition.simsite import read_lines, registry_from_lines

    settings = load(AcquisitionSettings)
    config = SiteConfig.model_validate_json(Path(site_path).read_text())
    registry = registry_from_lines(
        read_lines(lines_path), config, settings.project_id, quantities={"dlt645-2007": POLLED}
    )
    service = AcquisitionService(settings, registry, http=False)

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await service.run(stop)

    asyncio.run(serve())


@dataclass
class Trial:
    meter: str
    account: str
    started: dict[str, float] = field(default_factory=dict)  # direction → fact published (wall)
    signal_at: dict[str, float] = field(default_factory=dict)  # alarm raised / cleared consumed
    command_at: dict[str, float] = field(default_factory=dict)  # CommandRequested consumed
    command_id: dict[str, str] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)  # CommandSent.time (acquisition's clock)
    acked: dict[str, float] = field(default_factory=dict)  # CommandAcknowledged.time
    done_at: dict[str, float] = field(default_factory=dict)  # CommandAcknowledged consumed


def reading(meter: str, kwh: Decimal, when: Any, seq: int) -> ReadingRecorded:
    return ReadingRecorded(project_id=PROJECT, subject_id=meter, meter_id=meter, sequence=seq,
                           registers={"active_import_kwh": {Rate.TOTAL: kwh}}, meter_time=when,
                           received_at=when, route=ROUTE, time=when)  # fmt: skip


def recharge(account: str, fen: int, key: str) -> RechargeAccepted:
    return RechargeAccepted(project_id=PROJECT, subject_id=account, account_id=account, amount_fen=fen,
                            idempotency_key=key, operator_id="bench", channel="cash")  # fmt: skip


class Bench:
    def __init__(
        self, bootstrap: str, meters: list[str], background: int, gap: float, settle: float = 15.0
    ) -> None:
        self.bootstrap, self.background, self.gap, self.settle = bootstrap, background, gap, settle
        self.trials = {m: Trial(m, f"acct-{m}") for m in meters}
        self.by_account = {t.account: t for t in self.trials.values()}
        self.registered: set[str] = set()
        self.balances: dict[str, int] = {}
        self.commands: dict[str, tuple[Trial, str]] = {}
        self.producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()  # the setup is done

    async def send(self, events: list[Event]) -> None:
        assert self.producer is not None
        for e in events:
            await self.producer.send(e.TOPIC, CODEC.encode(e), key=e.key)
        await self.producer.flush()

    def observe(self, e: Event, now: float) -> None:
        if isinstance(e, MeterRegistered):
            self.registered.add(e.meter_id)
        elif isinstance(e, BalanceChanged) and e.account_id in self.by_account:
            self.balances[e.account_id] = e.balance_fen
        elif isinstance(e, AlarmRaised | AlarmCleared) and e.kind is AlarmKind.ARREARS:
            trial = self.by_account.get(e.subject_id)
            if trial is not None:
                trial.signal_at.setdefault("trip" if isinstance(e, AlarmRaised) else "restore", now)
        elif isinstance(e, CommandRequested) and e.meter_id in self.trials and "retry_of" not in e.params:
            direction = {Action.TRIP: "trip", Action.CLOSE: "restore"}.get(e.action)
            trial = self.trials[e.meter_id]
            if direction is not None and direction not in trial.command_id:
                trial.command_id[direction], trial.command_at[direction] = e.command_id, now
                self.commands[e.command_id] = (trial, direction)
        elif isinstance(e, CommandSent) and e.command_id in self.commands:
            trial, direction = self.commands[e.command_id]
            trial.sent[direction] = e.time.timestamp()
        elif isinstance(e, CommandAcknowledged) and e.command_id in self.commands:
            trial, direction = self.commands[e.command_id]
            trial.acked[direction], trial.done_at[direction] = e.time.timestamp(), now

    async def follow(self, stop: asyncio.Event) -> None:
        # The broker's cost grows with fetch requests × partitions fetched: the bench fetches as
        # often as the services do, and only the topics it still needs (registrations and
        # balances are for the setup).
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        )
        try:
            await consumer.start()
            topics = (REGISTRY_TOPIC, LEDGER, ALARMS, COMMANDS)
            consumer.assign([TopicPartition(t.name, p) for t in topics for p in range(t.partitions)])
            await consumer.seek_to_beginning()
            while not stop.is_set():
                if (
                    self.ready.is_set()
                    and len(consumer.assignment()) > ALARMS.partitions + COMMANDS.partitions
                ):
                    kept = [
                        TopicPartition(t.name, p) for t in (ALARMS, COMMANDS) for p in range(t.partitions)
                    ]
                    positions = {tp: await consumer.position(tp) for tp in kept}
                    consumer.assign(kept)
                    for tp, offset in positions.items():
                        consumer.seek(tp, offset)
                for records in (await consumer.getmany(timeout_ms=20)).values():
                    now = time.time()
                    for r in records:
                        for e in CODEC.decode(r.value):
                            if e.project_id == PROJECT:
                                self.observe(e, now)
        finally:
            await consumer.stop()

    async def wait(self, what: str, check: Any, within: float = 120) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

    async def setup(self) -> None:
        await self.wait("meter registrations", lambda: self.registered >= set(self.trials))
        start = utcnow() - timedelta(hours=2)
        facts: list[Event] = [
            TariffPublished(project_id=PROJECT, subject_id="t1", tariff_id="t1", version=1, name="flat",
                            effective_from=start - timedelta(days=1), definition=TARIFF, time=start)
        ]  # fmt: skip
        for t in self.trials.values():
            facts += [
                AccountOpened(project_id=PROJECT, subject_id=t.account, account_id=t.account, mode=BillingMode.PREPAID,
                              meter_ids=(t.meter,), tariff_id="t1", holder="bench", opened_by="bench", time=start),
                recharge(t.account, 100, f"{t.account}-0"),
                reading(t.meter, Decimal(100), start, 1),
            ]  # fmt: skip
        for b in range(self.background):
            meter, acct = f"bg-{b}", f"bg-acct-{b}"
            facts += [
                MeterRegistered(project_id=PROJECT, subject_id=meter, meter_id=meter, address=f"{b:012d}",
                                protocol="dlt645-2007", model="bg", medium="electricity", concentrator_id="bg",
                                bus_id="bg", time=start),
                AccountOpened(project_id=PROJECT, subject_id=acct, account_id=acct, mode=BillingMode.PREPAID,
                              meter_ids=(meter,), tariff_id="t1", holder="bg", opened_by="bench", time=start),
                recharge(acct, 10_000_000, f"{acct}-0"),
            ]  # fmt: skip
        await self.send(facts)
        await self.wait("opening balances", lambda: all(self.balances.get(a) == 100 for a in self.by_account))
        self.ready.set()

    async def load(self, stop: asyncio.Event) -> None:
        """``background`` readings per second: every background meter once a second, spread over
        ticks of ``TICK_S`` and packed per partition, as acquisition's outbox publishes them."""
        ticks = round(1 / TICK_S)
        groups = [[f"bg-{b}" for b in range(self.background) if b % ticks == t] for t in range(ticks)]
        seq, kwh = 1, Decimal(0)
        base = utcnow() - timedelta(hours=1)
        next_at = time.monotonic()
        while not stop.is_set():
            kwh += Decimal("0.01")
            when = base + timedelta(seconds=seq)
            for group in groups:
                batch = [reading(meter, kwh, when, seq) for meter in group]
                assert self.producer is not None
                for m in pack_readings(batch, READINGS.partitions, codec=CODEC):
                    await self.producer.send(READINGS.name, m.value, key=m.key, partition=m.partition)
                next_at += TICK_S
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if stop.is_set():
                    return
            seq += 1

    async def run(self) -> None:
        stop = asyncio.Event()
        tasks: list[asyncio.Future[None]] = []
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        try:
            await self.producer.start()
            tasks.append(asyncio.ensure_future(self.follow(stop)))
            await self.setup()
            tasks.append(asyncio.ensure_future(self.load(stop)))
            # Measure under *steady* background load: the first seconds of it are the services'
            # warm-up (first readings of every background meter), which slowed every other trip.
            await asyncio.sleep(self.settle)
            for t in self.trials.values():  # readings that drive each balance into arrears
                t.started["trip"] = time.time()
                await self.send([reading(t.meter, Decimal(103), utcnow(), 2)])
                await asyncio.sleep(self.gap)
            await self.wait(
                "trips acknowledged", lambda: all("trip" in t.done_at for t in self.trials.values())
            )
            for t in self.trials.values():
                t.started["restore"] = time.time()
                await self.send([recharge(t.account, 1000, f"{t.account}-1")])
                await asyncio.sleep(self.gap)
            await self.wait(
                "restores acknowledged", lambda: all("restore" in t.done_at for t in self.trials.values())
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await self.producer.stop()

    def report(self) -> None:
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

        for direction in ("trip", "restore"):
            ts = list(self.trials.values())
            rows = {
                "end to end": [t.done_at[direction] - t.started[direction] for t in ts],
                "on the bus (sent → ack)": [t.acked[direction] - t.sent[direction] for t in ts],
                "outside the bus": [
                    (t.done_at[direction] - t.started[direction]) - (t.acked[direction] - t.sent[direction])
                    for t in ts
                ],
                "  fact → alarm (billing)": [t.signal_at[direction] - t.started[direction] for t in ts],
                "  alarm → command (control)": [t.command_at[direction] - t.signal_at[direction] for t in ts],
                "  command → sent (acquisition)": [t.sent[direction] - t.command_at[direction] for t in ts],
            }
            print(f"{direction}: {len(ts)} meters")
            for name, values in rows.items():
                ms = [1000 * v for v in values]
                print(f"  {name:32s} p50 {pct(ms, 0.5):8.1f} ms  p99 {pct(ms, 0.99):8.1f} ms  "
                      f"mean {statistics.fmean(ms):8.1f} ms")  # fmt: skip


def main(
    buses: int,
    meters: int,
    background: int,
    gap: float,
    baud: int = 9600,
    delay_ms: tuple[float, float] = (50, 50),
) -> None:
    config = site(buses, meters, baud, delay_ms)
    broker = EmbeddedBroker().start()
    procs: list[subprocess.Popen[Any]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        try:
            ensure_topics(broker.bootstrap, CATALOGUE)
            sim, lines = start_simulator(config, tmp)
            procs.append(sim)
            (tmp / "lines.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
            env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
            env.update(MF_KAFKA_BOOTSTRAP=broker.bootstrap, MF_PROJECT_ID=PROJECT, MF_STATE_DIR=str(tmp / "state"),
                       MF_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
                       MF_ACQ_SIMULATOR=str(tmp / "lines.jsonl"), MF_ACQ_HTTP_PORT=str(free_port()),
                       MF_ACQ_DEFAULT_SCHEDULE="1",
                       MF_BILLING_HTTP_PORT=str(free_port()), MF_BILLING_FAUST_PORT=str(free_port()),
                       MF_CONTROL_HTTP_PORT=str(free_port()), MF_CONTROL_FAUST_PORT=str(free_port()),
                       MF_CONTROL_TICK_S="0.2", MF_PARTITIONS_MAX=str(PARTITIONS_MAX))  # fmt: skip
            cli = [sys.executable, "-m", "services.cli"]
            procs.append(spawn([sys.executable, __file__, "--acquisition", str(tmp / "site.json"),
                                str(tmp / "lines.jsonl")], env, tmp / "acquisition.log"))  # fmt: skip
            procs.append(spawn([*cli, "billing"], env, tmp / "billing.log"))
            procs.append(spawn([*cli, "control"], env, tmp / "control.log"))
            meter_ids = [
                f"{bus['bus']}/{m.address}" for bus in lines for m in _bus(config, bus["bus"]).meters
            ]
            bench = Bench(broker.bootstrap, meter_ids, background, gap)
            try:
                asyncio.run(bench.run())
            except SystemExit:
                for log in ("acquisition", "billing", "control"):
                    print(f"--- {log}\n" + (tmp / f"{log}.log").read_text()[-2000:])
                raise
            delay = (
                f"{delay_ms[0]:.0f}" if delay_ms[0] == delay_ms[1] else f"{delay_ms[0]:.0f}-{delay_ms[1]:.0f}"
            )
            print(f"{buses} buses x {meters} meters (DL/T 645-2007, {baud} 8E1, {delay} ms reply), "
                  f"background {background} readings/s, a trial every {gap} s, "
                  f"partitions per topic {'catalogue' if not PARTITIONS_MAX else f'<= {PARTITIONS_MAX}'}")  # fmt: skip
            bench.report()
        finally:
            import shutil

            for _l in ("acquisition", "billing", "control"):
                if (tmp / f"{_l}.log").exists():
                    shutil.copy(tmp / f"{_l}.log", f"/tmp/prof/{_l}.log")
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            broker.stop()


def _bus(config: SiteConfig, name: str) -> BusConfig:
    return next(b for c in config.concentrators for b in c.buses if b.name == name)


if __name__ == "__main__":
    if "MF_PARTITIONS_MAX" not in os.environ:  # the embedded stack's layout, as `meterflow dev` runs it
        os.environ["MF_PARTITIONS_MAX"] = str(EMBEDDED_PARTITIONS_MAX)
        os.execv(
            sys.executable, [sys.executable, __file__, *sys.argv[1:]]
        )  # the catalogue is built at import
    if len(sys.argv) == 4 and sys.argv[1] == "--acquisition":
        acquisition_child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--buses", type=int, default=2)
    parser.add_argument("--meters", type=int, default=16)
    parser.add_argument(
        "--background",
        default="200,1000,2000",
        help="background readings per second; several (comma-separated) run the target profile once each",
    )
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between trials")
    parser.add_argument(
        "--profile",
        choices=("target", "legacy", "both"),
        default="both",
        help="target: 9600 baud, 50 ms replies (the targets apply); legacy: 2400 baud, 20-500 ms replies",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.background.split(",")]
    if args.profile in ("target", "both"):
        for rate in rates:
            main(args.buses, args.meters, rate, args.gap)
    if args.profile in ("legacy", "both"):
        main(args.buses, args.meters, rates[0], max(args.gap, 4.0), 2400, (20, 500))
