"""`meterflow control [--check-config]`: the control worker (policy → relay commands, lifecycle).

HTTP (``MF_CONTROL_HTTP_PORT``): ``/healthz``, ``/readyz``, ``/metrics``;
``GET /meters/{meter_id}/relay`` (the relay / valve of a meter), ``GET /meters?state=on|off|
unknown|pending`` (every meter's), ``GET /commands/{command_id}`` (a command and its audit).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Annotated, Any

import faust
from fastapi import FastAPI, HTTPException, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from libs.events.base import utcnow
from libs.events.topics import CATALOGUE
from libs.stack.broker import ensure_topics
from libs.stack.catchup import end_offsets
from libs.stack.partitioned import Partitioned, partition_ends
from libs.stack.processor import Processor, Snapshots, make_app, serve_http
from libs.stack.runtime import service_settings, setup_logging
from services.control import router, views
from services.control.domain.lifecycle import CommandView
from services.control.settings import ControlSettings
from services.control.worker import INPUTS, UNUSED, ControlState, Meter, retry_policy


class ControlPartitions(Partitioned[ControlState]):
    """One :class:`ControlState` per meter partition owned, and read views over them all."""

    @property
    def meters(self) -> dict[tuple[str, str], Meter]:
        return {key: meter for state in self.states.values() for key, meter in state.meters.items()}

    @property
    def active(self) -> int:
        return sum(len(state.active) for state in self.states.values())

    def command(self, command_id: str) -> CommandView | None:
        for state in self.states.values():
            if (found := state.command(command_id)) is not None:
                return found
        return None


@dataclass
class Control:
    """The two processors of a control worker: the router and the per-meter state."""

    router: Processor
    state: Processor

    @property
    def processors(self) -> tuple[Processor, Processor]:
        return (self.router, self.state)


def build(settings: ControlSettings, bootstrap: str) -> tuple[faust.App, Control]:
    """The Faust app with control's router and its partitioned state attached."""
    retry = retry_policy(
        settings.control_max_attempts, settings.control_backoff_s, settings.control_backoff_factor,
        settings.control_max_backoff_s, settings.control_attempt_timeout_s, settings.control_command_timeout_s,
    )  # fmt: skip

    async def ends() -> dict[str, int]:
        return await end_offsets(bootstrap, INPUTS)

    def partition(p: int) -> ControlState:
        return ControlState(
            retry, end_offsets=partition_ends(ends, p), parameter_models=settings.parameter_models,
            stale_after_s=settings.control_stale_after_s, settle_s=settings.control_settle_s,
            owns=lambda meter_id: router.meter_partition(meter_id) == p,
        )  # fmt: skip

    states = ControlPartitions(partition)
    routing = router.Router()
    app = make_app(
        "meterflow-control", bootstrap, settings.snapshot_dir / "faust", settings.control_faust_port
    )
    snapshots = settings.snapshot_dir / "snapshots"
    control = Control(
        Processor(
            app, bootstrap, "control-router", router.INPUTS, routing, routing, Snapshots(snapshots / "router"),
            batch_size=settings.control_batch_size, snapshot_every=settings.control_snapshot_every_s,
            group_of=router.group_of, ignore=router.IGNORED, stateless=lambda group: True,
        ),
        Processor(
            app, bootstrap, "control", INPUTS, states, states, Snapshots(snapshots / "meters"),
            batch_size=settings.control_batch_size, snapshot_every=settings.control_snapshot_every_s,
            tick_every=settings.control_tick_s, ignore=UNUSED,
        ),
    )  # fmt: skip
    serve_http(app, web_app(control, states), settings.control_http_port)
    return app, control


def web_app(control: Control, state: ControlPartitions) -> FastAPI:
    """The HTTP API. Routes are ``async`` so they read the state on the worker's event loop; a
    replica answers for the meters of the partitions it owns."""
    registry = CollectorRegistry()
    events = Counter("mf_control_events", "facts folded", registry=registry)
    outputs = Counter("mf_control_outputs", "facts emitted", registry=registry)
    dead = Counter("mf_control_dead_letters", "inputs parked on mf.dead-letter", registry=registry)
    meters = Gauge("mf_control_meters", "meters known to control", registry=registry)
    active = Gauge("mf_control_active_meters", "meters with a command not ended", registry=registry)
    owned = Gauge("mf_control_partitions_owned", "meter partitions this worker folds", registry=registry)
    seen = {"events": 0, "outputs": 0, "dead_letters": 0}
    web = FastAPI(title="meterflow control", docs_url=None, redoc_url=None)

    @web.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @web.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        # Ready once assigned and no partition is being restored or caught up (a replica owning
        # nothing is ready and idle); a parked fact does not take the service out of rotation.
        ready = all(p.assigned and not p.catching_up for p in control.processors)
        response.status_code = 200 if ready else 503
        stats, routing = control.state.stats, control.router.stats
        return {
            "ready": ready,
            "partitions": sorted(control.state.owned),
            "catching_up": control.state.catching_up + control.router.catching_up,
            "records": stats.records,
            "events": stats.events,
            "routed": routing.events,
            "outputs": stats.outputs,
            "dead_letters": stats.dead_letters + routing.dead_letters,
        }

    @web.get("/metrics")
    async def metrics() -> Response:
        stats, routing = control.state.stats, control.router.stats
        parked = stats.dead_letters + routing.dead_letters
        events.inc(stats.events - seen["events"])
        outputs.inc(stats.outputs - seen["outputs"])
        dead.inc(parked - seen["dead_letters"])
        seen.update(events=stats.events, outputs=stats.outputs, dead_letters=parked)
        meters.set(len(state.meters))
        active.set(state.active)
        owned.set(len(control.state.owned))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @web.get("/meters")
    async def all_meters(
        state_filter: Annotated[
            str | None, Query(alias="state", pattern="^(on|off|unknown|pending)$")
        ] = None,
    ) -> list[dict[str, Any]]:
        return views.meters(state.meters, utcnow(), state_filter)

    @web.get("/meters/{meter_id}/relay")
    async def meter_relay(meter_id: str, project: str | None = None) -> dict[str, Any]:
        found = [m for (p, mid), m in state.meters.items() if mid == meter_id and project in (None, p)]
        if not found:
            raise HTTPException(404, f"meter {meter_id} unknown to control")
        if len(found) > 1:
            raise HTTPException(409, f"meter {meter_id} exists in several projects: pass ?project=")
        return views.relay(found[0], utcnow())

    @web.get("/commands/{command_id}")
    async def command(command_id: str) -> dict[str, Any]:
        view = state.command(command_id)
        if view is None:
            raise HTTPException(404, f"command {command_id} unknown")
        return views.command(view)

    return web


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow control`."""
    parser.add_argument("action", nargs="?", choices=["run"], default="run")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow control`."""
    settings = service_settings(ControlSettings, "control", args.check_config)
    if isinstance(settings, int):
        return settings
    assert settings.kafka_bootstrap is not None
    setup_logging(settings.log_level)
    ensure_topics(settings.kafka_bootstrap, CATALOGUE)
    app, _ = build(settings, settings.kafka_bootstrap)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()
    return 0
