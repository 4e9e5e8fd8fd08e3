"""Balance lookups through the real API process at a fixed request rate.

An embedded Tansu (or ``MF_KAFKA_BOOTSTRAP``) gets a site of N prepaid accounts with balances;
``meterflow api`` runs as its own process — one uvicorn worker, the read model folded from the
log — and an httpx async client sends ``GET /accounts/{id}/balance`` with a bearer token on an
open-loop schedule (requests start on time whether or not earlier ones finished, so a slow
server shows up as latency, not as a lower rate). Printed: the achieved rate, p50 / p90 / p99 /
max latency and errors. Target: 500 requests/s with p99 < 20 ms.

Then the monthly energy report through the same API process (``GET /reports/energy?period=month``,
JSON): the store is filled first with ``--report-rows`` readings (default 10 million, 10,000
meters, by ``bench/analytics_report.py --generate-only``) and the API reads it as its ClickHouse.
Target: < 500 ms. ``--report-rows 0`` skips it.

The load comes from ``--clients`` processes (default 2) sharing the rate. ``--client raw`` (the
default) is a minimal HTTP/1.1 keep-alive client on asyncio streams; ``--client httpx`` uses
httpx's async client, which costs 1.5–2 ms of CPU per request — twice the server's — so on a
shared 2-core machine the load generator, not the server, runs out of CPU first.

    python bench/api_load.py [--rate 500] [--seconds 20] [--accounts 5000] [--clients 2] [--client raw|httpx]
                             [--report-rows 10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from libs.events import AccountOpened, BalanceChanged, Codec, Event, MeterRegistered, TariffPublished
from libs.events.base import utcnow
from libs.events.topics import CATALOGUE
from libs.stack.broker import EmbeddedBroker, ensure_topics, free_port

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "bench"
ClientResult = tuple[list[float], int, float, float]
CONNECTIONS = 16


def site(accounts: int) -> list[Event]:
    out: list[Event] = [
        TariffPublished(project_id=PROJECT, subject_id="t1", tariff_id="t1", version=1, name="flat",
                        effective_from=utcnow(), definition={"kind": "single", "price_fen": "50"}),
    ]  # fmt: skip
    for i in range(accounts):
        meter, account = f"m{i}", f"a{i}"
        out += [
            MeterRegistered(project_id=PROJECT, subject_id=meter, meter_id=meter, address=f"{i:012d}",
                            protocol="dlt645-2007", model="DDSY", medium="electricity", concentrator_id="c1",
                            bus_id="b1"),
            AccountOpened(project_id=PROJECT, subject_id=account, account_id=account, mode="prepaid",
                          meter_ids=(meter,), tariff_id="t1", holder=f"holder {i}", opened_by="bench"),
            BalanceChanged(project_id=PROJECT, subject_id=account, account_id=account, delta_fen=10_000 + i,
                           balance_fen=10_000 + i, reason="recharge"),
        ]  # fmt: skip
    return out


async def publish(bootstrap: str, events: list[Event]) -> None:
    codec = Codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for e in events:
            await producer.send(e.TOPIC, codec.encode(e), key=e.key)
        await producer.flush()
    finally:
        await producer.stop()


async def wait_ready(base: str, api: subprocess.Popen[bytes], accounts: int) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise SystemExit("the API process exited")
            try:
                ready = await client.get("/readyz")
                if ready.status_code == 200 and ready.json()["accounts"] >= accounts:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit("the API did not become ready")


def client_process(
    base: str, token: str, rate: float, seconds: float, accounts: int, seed: int, client_kind: str
) -> ClientResult:
    """One load-client process: its share of the rate, open loop; returns its measurements."""
    cpu = time.process_time()
    latencies, errors, elapsed = asyncio.run(load(base, token, rate, seconds, accounts, seed, client_kind))
    return latencies, errors, elapsed, time.process_time() - cpu


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a tenth of httpx's CPU per request,
    so that the load generator does not starve the server it measures on a small machine."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, token: str
    ) -> None:
        self.reader, self.writer = reader, writer
        self.head = f"Host: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

    @classmethod
    async def open(cls, base: str, token: str) -> RawConnection:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}", token)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return int(head[9:12]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(
    base: str, token: str, rate: float, seconds: float, accounts: int, seed: int, client_kind: str
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    headers = {"Authorization": f"Bearer {token}"}
    raw: asyncio.Queue[RawConnection] = asyncio.Queue()
    if client_kind == "raw":
        for _ in range(CONNECTIONS):
            raw.put_nowait(await RawConnection.open(base, token))
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=5) as client:
        slots = asyncio.Semaphore(CONNECTIONS)

        async def get(path: str) -> tuple[int, bytes]:
            if client_kind == "httpx":
                response = await client.get(path)
                return response.status_code, response.content
            connection = await raw.get()
            try:
                return await connection.get(path)
            finally:
                raw.put_nowait(connection)

        async def one(account: int, due: float) -> None:
            # latency counts from when the request was due, so waiting for a free connection counts
            # too (no coordinated omission); the semaphore only keeps httpx's pool queue short,
            # whose cost grows with the number of waiting requests
            nonlocal errors
            async with slots:
                try:
                    status, body = await get(f"/accounts/a{account}/balance")
                    ok = status == 200 and json.loads(body)["balance_fen"] == 10_000 + account
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
            latencies.append(time.perf_counter() - due)
            errors += 0 if ok else 1

        for _ in range(50):  # warm up connections
            await one(rng.randrange(accounts), time.perf_counter())
        latencies.clear()
        total = int(rate * seconds)
        tasks = []
        start = time.perf_counter() + rng.random() / rate  # clients interleave instead of bursting together
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(rng.randrange(accounts), due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    while not raw.empty():
        raw.get_nowait().close()
    return latencies, errors, elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def within(metrics: str, route: str, bounds: tuple[str, ...]) -> list[tuple[str, float]]:
    """Share of the route's requests the server itself answered within each bound (histogram)."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("mf_api_request_seconds_bucket") and f'route="{route}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            counts[le] = float(line.rsplit(" ", 1)[1])
    total = counts.get("+Inf", 0.0) or 1.0
    return [(le, counts.get(le, 0.0) / total) for le in bounds]


def report_through_api(base: str, token: str, rows: int, runs: int = 5) -> None:
    """Time the monthly energy report per meter over a year, as JSON, through the API."""
    params = {"project_id": PROJECT, "period": "month", "group_by": "meter", "start": "2024-01-01",
              "end": "2025-01-01"}  # fmt: skip
    times, count = [], 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for _ in range(runs + 1):  # the first warms the store's caches
            started = time.perf_counter()
            answer = client.get("/reports/energy", params=params)
            times.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
            count = len(answer.json()["rows"])
    median = statistics.median(times[1:])
    print(f"monthly energy report through the API over {rows:,} readings: median {median:.0f} ms, "
          f"max {max(times[1:]):.0f} ms, first {times[0]:.0f} ms, {count:,} rows of JSON "
          f"(target < 500 ms: {'met' if median < 500 else 'NOT met'})")  # fmt: skip


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(args: argparse.Namespace) -> int:
    external = os.environ.get("MF_KAFKA_BOOTSTRAP")
    broker = None if external else EmbeddedBroker().start()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    api: subprocess.Popen[bytes] | None = None
    state = Path(tempfile.mkdtemp(prefix="api-bench-"))
    try:
        ensure_topics(bootstrap, CATALOGUE)
        asyncio.run(publish(bootstrap, site(args.accounts)))
        store = state / "clickhouse"
        if args.report_rows:  # the store the API will read reports from, filled by another process
            generator = [sys.executable, str(ROOT / "bench" / "analytics_report.py"), "--generate-only",
                         str(store), "--rows", str(args.report_rows), "--meters", "10000"]  # fmt: skip
            print(subprocess.run(generator, check=True, capture_output=True, text=True).stdout.strip())
        port, password = free_port(), uuid.uuid4().hex
        admin = f"bench-{password[:6]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
        env.update(MF_KAFKA_BOOTSTRAP=bootstrap, MF_STATE_DIR=str(state), MF_API_PORT=str(port),
                   MF_API_HOST="127.0.0.1", MF_API_ADMIN_USER=admin, MF_API_ADMIN_PASSWORD=password,
                   MF_LOG_LEVEL="WARNING", MF_CLICKHOUSE_DSN=f"chdb://{store}")  # fmt: skip
        with open(state / "api.log", "wb") as log:
            api = subprocess.Popen([sys.executable, "-m", "services.cli", "api"], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base, api, args.accounts))
        login = httpx.post(f"{base}/auth/token", data={"username": admin, "password": password})
        login.raise_for_status()
        token = login.json()["access_token"]

        server_cpu = cpu_seconds(api.pid)
        share = args.rate / args.clients
        with ProcessPoolExecutor(args.clients) as pool:
            futures = [
                pool.submit(
                    client_process, base, token, share, args.seconds, args.accounts, seed, args.client
                )
                for seed in range(args.clients)
            ]
            results = [f.result() for f in futures]
        server_cpu = cpu_seconds(api.pid) - server_cpu
        server_side = within(
            httpx.get(f"{base}/metrics").text, "/accounts/{account_id}/balance", ("0.005", "0.02")
        )

        ms = [x * 1000 for r in results for x in r[0]]
        errors = sum(r[1] for r in results)
        elapsed = max(r[2] for r in results)
        p99 = quantile(ms, 0.99)
        print(f"balance lookups: {len(ms)} requests in {elapsed:.1f} s = {len(ms) / elapsed:.0f} req/s "
              f"(target {args.rate}), one uvicorn worker, {args.accounts} accounts, "
              f"{args.clients} {args.client} client processes")  # fmt: skip
        print(f"latency ms: p50 {quantile(ms, 0.5):.2f}  p90 {quantile(ms, 0.9):.2f}  p99 {p99:.2f}  "
              f"max {max(ms):.2f}  mean {statistics.fmean(ms):.2f}; errors {errors}")  # fmt: skip
        print(f"CPU per request: server {server_cpu / len(ms) * 1e3:.2f} ms, "
              f"load clients {sum(r[3] for r in results) / len(ms) * 1e3:.2f} ms; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")  # fmt: skip
        print(
            "server-side (its /metrics): "
            + ", ".join(f"{share:.2%} within {le} s" for le, share in server_side)
        )
        print(f"target p99 < 20 ms: {'met' if p99 < 20 and errors == 0 else 'NOT met'}")
        if args.report_rows:
            report_through_api(base, token, args.report_rows)
        return 0
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(20)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=2, help="load-client processes sharing the rate")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="HTTP client of the load")
    parser.add_argument(
        "--report-rows", type=int, default=10_000_000, help="readings for the report; 0 = skip"
    )
    sys.exit(main(parser.parse_args()))
