"""`meterflow dev` (what `make run` starts): the whole platform on one machine.

With no ``MF_KAFKA_BOOTSTRAP`` it starts the embedded Tansu broker on a free loopback port; with
no ``MF_CLICKHOUSE_DSN`` it opens chDB under ``MF_STATE_DIR``. Then, in this order: create the
topics, apply ClickHouse migrations, restore every archived partition into the (empty, memory-
only) broker, start the archiver, start the services that exist, serve /healthz, /readyz,
/metrics and /status, and print where to look. Ctrl-C (SIGINT) or SIGTERM stops the services,
drains the archiver to the broker's end, and stops the broker — so the next start finds every
event again. This process owns the chDB store; other processes reach it through this one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from libs.events.topics import CATALOGUE, PARTITIONS_MAX
from libs.settings import CommonSettings, ConfigError, load
from libs.stack.archive import Archiver, restore
from libs.stack.broker import BrokerError, EmbeddedBroker, check_reachable, ensure_topics
from libs.stack.chproxy import ProxyServer
from libs.stack.clickhouse import StoreError, migrate, open_client
from libs.stack.control_api import build_app
from libs.stack.runtime import HttpServer, setup_logging
from services.api.analytics.sink import Sink

log = logging.getLogger("meterflow.dev")
STACK_FILE = "stack.json"
LAYOUT_FILE = "layout.json"  # the partition cap the archived topics were created with
EMBEDDED_PARTITIONS_MAX = 1  # the embedded broker's fetch cost grows with partitions (topics.py)


class DevSettings(CommonSettings):
    """Settings of `meterflow dev`."""

    http_port: int = Field(
        default=8700, ge=1, le=65535, description="port of the stack's /status, /healthz, /metrics"
    )
    broker_port: int | None = Field(
        default=None, ge=1, le=65535, description="embedded Tansu port; unset = free"
    )
    simulate: bool = Field(default=True, description="start the simulated site of meters")
    partitions_max: int | None = Field(
        default=None,
        ge=0,
        description="cap on every topic's partitions (libs/events/topics.py); unset = 1 for the embedded broker",
    )
    clickhouse_http_port: int = Field(
        default=0, ge=0, le=65535, description="port of the chDB store's ClickHouse HTTP interface; 0 = free"
    )
    services: str = Field(
        default="all",
        description="services to start: all, none, or a comma list of simulate, acquisition, billing, "
        "control, notify, api",
    )

    @field_validator("services")
    @classmethod
    def _known_services(cls, value: str) -> str:
        names = {n.strip() for n in value.split(",") if n.strip()}
        unknown = names - {"all", "none", *(spec.name for spec in SERVICES)}
        if unknown:
            raise ValueError(f"unknown service(s) {sorted(unknown)}")
        return value

    def wants(self, name: str) -> bool:
        """Whether the stack should start service ``name``."""
        names = {n.strip() for n in self.services.split(",")}
        return "all" in names or name in names


@dataclass(frozen=True)
class ServiceSpec:
    """A service process the dev stack starts when its module exists."""

    name: str
    module: str  # must be importable for the service to be started
    argv: tuple[str, ...]


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("simulate", "libs.protocols.simulator.cli", ("simulate",)),
    ServiceSpec("acquisition", "services.acquisition.main", ("acquisition",)),
    ServiceSpec("billing", "services.billing.main", ("billing",)),
    ServiceSpec("control", "services.control.main", ("control",)),
    ServiceSpec("notify", "services.notify.main", ("notify",)),
    ServiceSpec("api", "services.api.main", ("api",)),
)


# Where each service answers over HTTP: (settings class, its port field, what to open).
ENDPOINTS: dict[str, tuple[str, str, str]] = {
    "acquisition": ("services.acquisition.settings:AcquisitionSettings", "acq_http_port", "/readyz"),
    "billing": ("services.billing.settings:BillingSettings", "billing_http_port", "/readyz"),
    "control": ("services.control.settings:ControlSettings", "control_http_port", "/meters"),
    "notify": ("services.notify.settings:NotifySettings", "notify_http_port", "/sends"),
    "api": ("services.api.settings:ApiSettings", "api_port", "/docs"),
}


def endpoint(name: str) -> str | None:
    """The URL of a service's main page, from its settings (the environment it starts with)."""
    if name not in ENDPOINTS:
        return None
    target, field, path = ENDPOINTS[name]
    module, cls = target.split(":")
    try:
        default = getattr(importlib.import_module(module), cls).model_fields[field].default
    except (ImportError, AttributeError, KeyError):
        return None
    # The port alone, as the service reads it (its other settings are its own business here).
    return f"http://127.0.0.1:{os.environ.get(f'MF_{field.upper()}', default)}{path}"


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclass
class Service:
    """A running service process whose output goes to a log file (and its first lines to status)."""

    spec: ServiceSpec
    process: asyncio.subprocess.Process
    log_path: Path
    announced: list[Any] = field(default_factory=list)  # JSON lines it printed on stdout
    pump: asyncio.Task[None] | None = None

    async def pump_output(self) -> None:
        assert self.process.stdout is not None
        with open(self.log_path, "ab") as out:  # noqa: ASYNC230 - a local log file, written line by line
            async for line in self.process.stdout:
                out.write(line)
                out.flush()
                if line.startswith(b"{") and len(self.announced) < 100:
                    with contextlib.suppress(ValueError):  # not every line starting with { is JSON
                        self.announced.append(json.loads(line))


class Stack:
    """The embedded stack: broker, store, archiver, services and the status endpoint."""

    def __init__(self, settings: DevSettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.logs = self.state_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap or ""
        self.stop_archiving = asyncio.Event()
        self.archiver: Archiver | None = None
        self.archive_task: asyncio.Task[None] | None = None
        self.services: list[Service] = []
        self.http: HttpServer | None = None
        self.restored: dict[str, int] = {}
        self.started_at = time.time()
        self.client: Any = None
        self.chproxy: ProxyServer | None = None
        self.sink: Sink | None = None
        self.sink_task: asyncio.Task[None] | None = None
        self.stop_sink = asyncio.Event()
        self.simulator_file: Path | None = None

    async def start(self) -> None:
        """Bring everything up, in dependency order; raise on the first failure."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._refuse_second_instance()
        if not _port_free(self.settings.http_port):
            raise ConfigError(f"MF_HTTP_PORT: port {self.settings.http_port} is already in use")
        if self.settings.embedded_broker:
            self.broker = EmbeddedBroker(self.settings.broker_port, log_path=self.logs / "tansu.log")
            await asyncio.to_thread(self.broker.start)
            self.bootstrap = self.broker.bootstrap
        else:
            await asyncio.to_thread(check_reachable, self.bootstrap)
        await asyncio.to_thread(ensure_topics, self.bootstrap, CATALOGUE)
        if self.settings.embedded_broker:
            (self.state_dir / LAYOUT_FILE).write_text(json.dumps({"partitions_max": PARTITIONS_MAX}))
        self.client = await asyncio.to_thread(open_client, self.settings.clickhouse_target)
        await asyncio.to_thread(migrate, self.client)
        report = await restore(self.bootstrap, self.client)
        self.restored = report.restored
        self.archiver = Archiver(self.bootstrap, self.client, [t.name for t in CATALOGUE])
        await self.archiver.start()
        self.archive_task = asyncio.create_task(self.archiver.run(self.stop_archiving))
        if self.settings.clickhouse_target.startswith("chdb:"):
            # Other processes reach the one chDB store through this process, over ClickHouse HTTP.
            self.chproxy = ProxyServer(
                self.settings.clickhouse_target, "127.0.0.1", self.settings.clickhouse_http_port
            )
            await self.chproxy.start()
        sink_client = await asyncio.to_thread(open_client, self.settings.clickhouse_target)
        self.sink = Sink(self.bootstrap, sink_client)
        await self.sink.start()
        self.sink_task = asyncio.create_task(self.sink.run(self.stop_sink))
        for spec in SERVICES:
            if not self.settings.wants(spec.name):
                continue
            if spec.name == "simulate" and not self.settings.simulate:
                continue
            if spec.name == "acquisition" and not self.simulator_file:
                continue  # without a site there is nothing to poll (set MF_ACQ_* and run it yourself)
            if _exists(spec.module):
                service = await self._spawn(spec)
                self.services.append(service)
                if spec.name == "simulate":
                    self.simulator_file = await self._site_endpoints(service)
        self.http = HttpServer(build_app(self), "127.0.0.1", self.settings.http_port)
        await self.http.start()
        self._write_stack_file()

    def _refuse_second_instance(self) -> None:
        path = self.state_dir / STACK_FILE
        if path.exists():
            pid = json.loads(path.read_text()).get("pid", 0)
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):
                path.unlink()  # left over from a crash
            else:
                raise ConfigError(f"MF_STATE_DIR: a stack (pid {pid}) already runs on {self.state_dir}")

    async def _site_endpoints(self, simulator: Service, timeout: float = 20.0) -> Path | None:
        """Wait for the simulator to announce its buses; write them where acquisition reads them."""
        deadline = time.monotonic() + timeout
        while not any("control" in item for item in simulator.announced):
            if simulator.process.returncode is not None or time.monotonic() > deadline:
                log.error("the simulator did not announce its endpoints; acquisition not started")
                return None
            await asyncio.sleep(0.1)
        path = self.state_dir / "simulator.jsonl"
        path.write_text("".join(json.dumps(item) + "\n" for item in simulator.announced if "bus" in item))
        return path

    async def _spawn(self, spec: ServiceSpec) -> Service:
        env = dict(
            os.environ,
            MF_KAFKA_BOOTSTRAP=self.bootstrap,
            MF_PARTITIONS_MAX=str(PARTITIONS_MAX),  # the topics' layout, as this process sees it
            PYTHONUNBUFFERED="1",
        )
        if not self.settings.clickhouse_dsn:
            env.pop("MF_CLICKHOUSE_DSN", None)
            if self.chproxy is not None:
                env["MF_CLICKHOUSE_DSN"] = self.chproxy.dsn
        if spec.name == "acquisition" and self.simulator_file is not None:
            env["MF_ACQ_SIMULATOR"] = str(self.simulator_file)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *spec.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        service = Service(spec, process, self.logs / f"{spec.name}.log")
        service.pump = asyncio.create_task(service.pump_output())
        return service

    def _write_stack_file(self) -> None:
        doc = {
            "pid": os.getpid(),
            "bootstrap": self.bootstrap,
            "embedded_broker": self.broker is not None,
            "http": f"http://127.0.0.1:{self.settings.http_port}",
            "clickhouse": self.settings.clickhouse_target,
            "clickhouse_http": self.chproxy.dsn if self.chproxy else None,
            "started_at": self.started_at,
        }
        (self.state_dir / STACK_FILE).write_text(json.dumps(doc, indent=2))

    def banner(self) -> str:
        """Where to look, printed once everything is up."""
        http = f"http://127.0.0.1:{self.settings.http_port}"
        lines = [
            "meterflow dev stack is up",
            f"  Kafka bootstrap   {self.bootstrap}  ({'embedded Tansu' if self.broker else 'external'})",
            f"  ClickHouse        {self.settings.clickhouse_target}"
            + (f"  (HTTP for other processes: {self.chproxy.dsn})" if self.chproxy else ""),
            f"  status            {http}/status   health {http}/healthz   metrics {http}/metrics",
            f"  restored          {sum(self.restored.values())} archived messages into the broker",
            f"  logs              {self.logs}/",
            f"  services          {', '.join(s.spec.name for s in self.services) or '(none yet)'}",
        ]
        for service in self.services:
            if (url := endpoint(service.spec.name)) is not None:
                lines.append(f"    {service.spec.name:<12s}{url}")
        if any(s.spec.name == "api" for s in self.services):
            secret = self.state_dir / "api" / "admin-password"
            lines.append(f"    API login    user admin, password in {secret} (first start; MF_API_ADMIN_*)")
        for service in self.services:
            for item in service.announced[:12]:
                lines.append(f"    {service.spec.name}: {json.dumps(item)}")
        lines += [
            "  try               meterflow status   |   meterflow events tail mf.readings",
            "  stop              Ctrl-C (everything is archived; the next start restores it)",
        ]
        return "\n".join(lines)

    async def stop(self) -> None:
        """Stop services, drain the archiver, stop the broker; safe to call after a partial start."""
        for service in self.services:
            if service.process.returncode is None:
                service.process.terminate()
        for service in self.services:
            try:
                await asyncio.wait_for(service.process.wait(), 10)
            except TimeoutError:
                service.process.kill()
                await service.process.wait()
            if service.pump is not None:
                await service.pump
        self.stop_sink.set()
        if self.sink_task is not None:
            await self.sink_task
        self.stop_archiving.set()
        if self.archive_task is not None:
            await self.archive_task
        if self.http is not None:
            await self.http.stop()
        if self.chproxy is not None:
            await self.chproxy.stop()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        (self.state_dir / STACK_FILE).unlink(missing_ok=True)


async def serve(settings: DevSettings, ready_wait: float = 2.0) -> int:
    """Run the stack until SIGINT/SIGTERM; returns the exit code."""
    stack = Stack(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stack.start()
        await asyncio.sleep(ready_wait if stack.services else 0)  # let services announce endpoints
        print(stack.banner(), flush=True)
        await stopping.wait()
        print("stopping: services, then archive drain, then broker …", flush=True)
        return 0
    except (BrokerError, StoreError, ConfigError, OSError) as exc:
        print(f"meterflow dev: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        await stack.stop()
        if stack.archiver is not None:
            print(f"stopped; {stack.archiver.archived} messages archived this run", flush=True)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow dev`."""
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow dev`."""
    try:
        settings = load(DevSettings)
    except ConfigError as exc:
        print(f"meterflow dev: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"configuration ok: {settings.model_dump_json()}")
        return 0
    layout = partition_layout(settings)
    if layout != PARTITIONS_MAX:  # the topic catalogue was built at import: start again with it
        os.environ["MF_PARTITIONS_MAX"] = str(layout)
        rest = sys.argv[sys.argv.index("dev") + 1 :] if "dev" in sys.argv else []
        os.execv(sys.executable, [sys.executable, "-m", "services.cli", "dev", *rest])
    setup_logging(settings.log_level)
    return asyncio.run(serve(settings))


def partition_layout(settings: DevSettings) -> int:
    """The partition cap of this stack's topics (``MF_PARTITIONS_MAX``, libs/events/topics.py).

    With an external broker: as configured. With the embedded one: the cap its archived topics
    were created with (``layout.json`` in the state directory: restoring needs the same
    partitions); for a new state directory the configured value, else 1; for an archive written
    before the layout was recorded, no cap (the counts of the catalogue it was written with)."""
    if not settings.embedded_broker:
        return settings.partitions_max or 0
    recorded = settings.state_dir / LAYOUT_FILE
    if recorded.exists():
        return int(json.loads(recorded.read_text())["partitions_max"])
    if settings.partitions_max is not None:
        return settings.partitions_max
    store = settings.state_dir / "clickhouse"
    if settings.clickhouse_dsn is None and store.is_dir() and any(store.iterdir()):
        return 0
    return EMBEDDED_PARTITIONS_MAX
