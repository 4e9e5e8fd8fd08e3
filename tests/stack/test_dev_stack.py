"""`meterflow dev` end to end: start, write events, stop, restart — every event is back, in
order, once. Also the CLI tools against the running stack, and fast failure on bad config."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.events import CATALOGUE, REGISTRY, Codec, new_event_id
from libs.stack.broker import free_port, partition_counts
from libs.stack.dev import SERVICES, DevSettings, _exists, partition_layout
from tests.events.strategies import sample

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "services.cli"]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    # No services: the archive tests count exactly the messages they send (services would answer them).
    env.update({"MF_STATE_DIR": str(tmp / "state"), "MF_HTTP_PORT": str(free_port()), "MF_SIMULATE": "false",
                "MF_SERVICES": "none"})  # fmt: skip
    env.update(extra)
    return env


class DevStack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.state = Path(env["MF_STATE_DIR"])
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 90) -> dict[str, object]:
        self.proc = subprocess.Popen(
            [*CLI, "dev"], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.env['MF_HTTP_PORT']}/readyz"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
            try:
                if httpx.get(url, timeout=1).status_code == 200 and (self.state / "stack.json").exists():
                    return json.loads((self.state / "stack.json").read_text())
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("stack did not become ready")

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, out
        return out


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    return _env(tmp_path)


async def _produce(bootstrap: str, n_rounds: int) -> int:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        futures = []
        for i in range(n_rounds):
            for cls in REGISTRY.types():
                e = sample(cls).model_copy(update={"event_id": new_event_id(), "subject_id": f"s{i % 9}"})
                futures.append(await producer.send(e.TOPIC, codec.encode(e), key=e.key))
                sent += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def _snapshot(bootstrap: str) -> dict[tuple[str, int], list[tuple[int, bytes | None, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    counts = partition_counts(bootstrap, [t.name for t in CATALOGUE])  # the stack's layout
    tps = [TopicPartition(name, p) for name, n in counts.items() for p in range(n)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    out: dict[tuple[str, int], list[tuple[int, bytes | None, bytes]]] = {
        (tp.topic, tp.partition): [] for tp in tps
    }
    try:
        quiet = 0
        while quiet < 4:
            batch = await consumer.getmany(timeout_ms=400)
            quiet = 0 if batch else quiet + 1
            for tp, records in batch.items():
                out[(tp.topic, tp.partition)] += [(r.offset, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return out


def test_stop_and_restart_finds_every_event_again_in_order_once(stack_env: dict[str, str]) -> None:
    stack = DevStack(stack_env)
    info = stack.start()
    sent = asyncio.run(_produce(str(info["bootstrap"]), 20))
    before = asyncio.run(_snapshot(str(info["bootstrap"])))
    assert sum(len(v) for v in before.values()) == sent
    # the embedded layout: one partition a topic (the test process itself uses the full counts)
    assert set(partition_counts(str(info["bootstrap"]), [t.name for t in CATALOGUE]).values()) == {1}
    assert json.loads((stack.state / "layout.json").read_text()) == {"partitions_max": 1}

    status = subprocess.run(
        [*CLI, "status", "--json"], env=stack_env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["clickhouse"]["ok"] and report["broker"]["ok"]
    assert sum(t["messages"] for t in report["broker"]["topics"].values()) == sent

    tail = subprocess.run(
        [*CLI, "events", "tail", "mf.billing", "--from-beginning", "-n", "5"],
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert (
        tail.returncode == 0 and len(lines) == 5 and all(d["type"].startswith("billing.v1.") for d in lines)
    )

    out = stack.stop()
    assert f"{sent} messages archived" in out

    info2 = stack.start()  # a new, empty, memory-only broker: everything below came from the archive
    after = asyncio.run(_snapshot(str(info2["bootstrap"])))
    assert after == before  # every message, same partition, same offset, same order, no duplicates

    more = asyncio.run(_produce(str(info2["bootstrap"]), 3))
    stack.stop()
    info3 = stack.start()
    final = asyncio.run(_snapshot(str(info3["bootstrap"])))
    stack.stop()
    assert sum(len(v) for v in final.values()) == sent + more
    for key, records in before.items():
        assert final[key][: len(records)] == records


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"MF_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "MF_KAFKA_BOOTSTRAP=127.0.0.1:1"),
        ({"MF_KAFKA_BOOTSTRAP": "no-port-here"}, "MF_KAFKA_BOOTSTRAP"),
        ({"MF_CLICKHOUSE_DSN": "mysql://x"}, "MF_CLICKHOUSE_DSN"),
        ({"MF_CLICKHOUSE_DSN": "http://127.0.0.1:1"}, "cannot open ClickHouse at http://127.0.0.1:1"),
        ({"MF_HTTP_PORT": "eighty"}, "MF_HTTP_PORT"),
        ({"MF_LOG_LEVEL": "LOUD"}, "MF_LOG_LEVEL"),
        ({"MF_SERVICES": "billing,payroll"}, "MF_SERVICES"),
        ({"MF_PARTITIONS_MAX": "two"}, "MF_PARTITIONS_MAX"),
    ],
)
def test_bad_configuration_fails_fast_naming_the_setting(
    tmp_path: Path, extra: dict[str, str], named: str
) -> None:
    started = time.monotonic()
    result = _run_cli(["dev"], _env(tmp_path, **extra))
    assert result.returncode == 2
    assert named in result.stderr
    assert time.monotonic() - started < 30


def test_check_config_validates_and_exits(tmp_path: Path) -> None:
    assert _run_cli(["dev", "--check-config"], _env(tmp_path)).returncode == 0
    bad = _run_cli(["dev", "--check-config"], _env(tmp_path, MF_SIMULATE="perhaps"))
    assert bad.returncode == 2 and "MF_SIMULATE" in bad.stderr


def test_status_without_a_running_stack_says_so(tmp_path: Path) -> None:
    result = _run_cli(["status"], _env(tmp_path))
    assert result.returncode == 1
    assert "make run" in result.stdout


SERVICE_MODULES = {spec.name: spec.module for spec in SERVICES}
PORTS = {  # every service's HTTP port, free ones so a running `make run` does not collide
    "acquisition": "MF_ACQ_HTTP_PORT",
    "billing": "MF_BILLING_HTTP_PORT",
    "control": "MF_CONTROL_HTTP_PORT",
    "notify": "MF_NOTIFY_HTTP_PORT",
    "api": "MF_API_PORT",
}


@pytest.mark.slow
def test_make_run_brings_up_every_service_and_readings_reach_billing(tmp_path: Path) -> None:
    env = _env(tmp_path, MF_SIMULATE="true", MF_SERVICES="all")
    env.update({var: str(free_port()) for var in PORTS.values()})
    env.update({f"MF_{s.upper()}_FAUST_PORT": str(free_port()) for s in ("billing", "control", "notify")})
    stack = DevStack(env)
    info = stack.start(timeout=120)
    try:
        expected = {name for name in ("simulate", *PORTS) if _exists(SERVICE_MODULES[name])}
        deadline = time.monotonic() + 120
        ready: dict[str, int] = {}
        while time.monotonic() < deadline and set(ready) != expected - {"simulate"}:
            for name in expected - {"simulate"} - set(ready):
                try:
                    code = httpx.get(f"http://127.0.0.1:{env[PORTS[name]]}/readyz", timeout=2).status_code
                except httpx.HTTPError:
                    continue
                if code == 200:
                    ready[name] = code
            time.sleep(0.5)
        status = httpx.get(f"http://127.0.0.1:{env['MF_HTTP_PORT']}/status", timeout=5).json()
        assert {n for n, s in status["services"].items() if s["running"]} == expected, status["services"]
        assert set(ready) == expected - {"simulate"}, f"not ready: {expected - {'simulate'} - set(ready)}"
        counts = asyncio.run(_snapshot(str(info["bootstrap"])))
        assert sum(len(v) for (topic, _), v in counts.items() if topic == "mf.readings") > 0
        billing = httpx.get(f"http://127.0.0.1:{env['MF_BILLING_HTTP_PORT']}/readyz", timeout=5).json()
        # the simulated site's readings and topology reached billing's router (the demo site has no
        # accounts yet: its meters' facts wait there for a binding)
        assert billing["routed"] > 0
    finally:
        out = stack.stop()
    assert "stopped;" in out
    for name in expected & set(PORTS):  # the banner says where each service answers
        assert f"http://127.0.0.1:{env[PORTS[name]]}/" in out, name


def test_the_partition_layout_follows_the_archive(tmp_path: Path) -> None:
    def layout(**settings: object) -> int:
        return partition_layout(DevSettings(state_dir=tmp_path, **settings))  # type: ignore[arg-type]

    assert layout() == 1  # a new embedded stack: one partition a topic
    assert layout(partitions_max=3) == 3  # as configured
    (tmp_path / "clickhouse").mkdir()
    (tmp_path / "clickhouse" / "data").write_text("")
    assert layout() == 0  # an archive from before layouts were recorded: the catalogue's counts
    (tmp_path / "layout.json").write_text(json.dumps({"partitions_max": 1}))
    assert layout(partitions_max=0) == 1  # the archive's layout wins: restoring needs the same partitions
    assert layout(partitions_max=4, kafka_bootstrap="127.0.0.1:9092") == 4  # external broker: as set
    assert layout(kafka_bootstrap="127.0.0.1:9092") == 0
