"""`meterflow billing [run|replay] [--check-config]`: the billing worker, or a replay of the log."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import faust
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from libs.events.topics import BILLING, CATALOGUE
from libs.stack.broker import ensure_topics
from libs.stack.catchup import end_offsets
from libs.stack.processor import Processor, Snapshots, make_app, one_group, serve_http
from libs.stack.runtime import service_settings, setup_logging
from services.billing.replay import replay
from services.billing.settings import BillingSettings
from services.billing.worker import INPUTS, OWN_OUTPUTS, BillingState, alarm_config


def build(
    settings: BillingSettings, bootstrap: str, clock: Callable[[], float] | None = None
) -> tuple[faust.App, Processor]:
    """The Faust app with the billing processor attached; ``clock`` (epoch seconds) is the time
    allowance plans are judged at (default: the wall clock)."""
    state = BillingState(
        alarm_config(settings.billing_alarm_level1_fen, settings.billing_alarm_level2_fen),
        settings.freeze_schedule,
        clock=clock,
        end_offsets=lambda: end_offsets(bootstrap, [BILLING.name]),
    )
    app = make_app(
        "meterflow-billing", bootstrap, settings.snapshot_dir / "faust", settings.billing_faust_port
    )
    processor = Processor(
        app, bootstrap, "billing", INPUTS, state, state, Snapshots(settings.snapshot_dir / "snapshots"),
        batch_size=settings.billing_batch_size, snapshot_every=settings.billing_snapshot_every_s,
        group_of=one_group, ignore=OWN_OUTPUTS, tick_every=settings.billing_allowance_tick_s,
    )  # fmt: skip
    _serve_health(app, processor, settings.billing_http_port)
    return app, processor


def _serve_health(app: faust.App, processor: Processor, port: int) -> None:
    registry = CollectorRegistry()
    events = Counter("mf_billing_events", "facts folded", registry=registry)
    outputs = Counter("mf_billing_outputs", "facts emitted", registry=registry)
    dead = Counter("mf_billing_dead_letters", "inputs parked on mf.dead-letter", registry=registry)
    accounts = Gauge("mf_billing_accounts", "accounts in the books", registry=registry)
    waiting = Gauge("mf_billing_waiting_facts", "facts waiting for what they need", registry=registry)
    parked = Gauge(
        "mf_billing_parked_replacements",
        "meter replacements waiting for the meter's first reading after them",
        registry=registry,
    )
    seen = {"events": 0, "outputs": 0, "dead_letters": 0}
    web = FastAPI(title="meterflow billing", docs_url=None, redoc_url=None)

    @web.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @web.get("/readyz")
    def readyz(response: Response) -> dict[str, object]:
        ready = bool(processor.owned)
        response.status_code = 200 if ready else 503
        stats = processor.stats
        return {
            "ready": ready,
            "records": stats.records,
            "events": stats.events,
            "snapshots": stats.snapshots,
            "dead_letters": stats.dead_letters,  # parked, not fatal: readiness does not depend on it
        }

    @web.get("/metrics")
    def metrics() -> Response:
        events.inc(processor.stats.events - seen["events"])
        outputs.inc(processor.stats.outputs - seen["outputs"])
        dead.inc(processor.stats.dead_letters - seen["dead_letters"])
        seen.update(
            events=processor.stats.events,
            outputs=processor.stats.outputs,
            dead_letters=processor.stats.dead_letters,
        )
        state = processor.handler
        if isinstance(state, BillingState):
            accounts.set(len(state.books.accounts))
            waiting.set(sum(len(q) for q in state.waiting.values()))
            parked.set(sum(len(p) for p in state.parked.values()))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    serve_http(app, web, port)


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `meterflow billing`."""
    parser.add_argument("action", nargs="?", choices=["run", "replay"], default="run")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    """Entry point of `meterflow billing`."""
    settings = service_settings(BillingSettings, "billing", args.check_config)
    if isinstance(settings, int):
        return settings
    assert settings.kafka_bootstrap is not None
    setup_logging(settings.log_level)
    if args.action == "replay":
        level1, level2 = settings.billing_alarm_level1_fen, settings.billing_alarm_level2_fen
        result = asyncio.run(replay(settings.kafka_bootstrap, alarm_config(level1, level2)))
        rate = result.events / result.seconds if result.seconds else 0.0
        print(
            f"replayed {result.events} events in {result.seconds:.2f} s ({rate:,.0f}/s): "
            f"{len(result.replayed)} accounts, {len(result.mismatches)} differ from the live balances"
        )
        if result.waiting or result.parked:  # the live worker holds the same (same log, same fold)
            print(
                f"  at the end of the log {result.waiting} facts wait for what they need (a meter,"
                f" account or tariff not in the log), {result.parked} meter replacements for a"
                " reading after them"
            )
        for (project, account), (replayed, live) in result.mismatches.items():
            print(f"  {project}/{account}: replayed {replayed}, live {live}")
        return 0 if not result.mismatches else 1
    ensure_topics(settings.kafka_bootstrap, CATALOGUE)
    app, _ = build(settings, settings.kafka_bootstrap)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()
    return 0
