"""`meterflow billing [run|replay] [--check-config]`: the billing worker, or a replay of the log.

One worker process runs two stream processors in one consumer group: the router
(:mod:`services.billing.router`, meter partitions of mf.readings / mf.registry / mf.bindings, and
mf.billing / mf.tariffs) and the books (:mod:`services.billing.partitioned`, partitions of
mf.billing-in). Any number of workers share the partitions; each folds only what it owns.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import faust
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from libs.events.topics import BILLING, BILLING_IN, CATALOGUE
from libs.stack.broker import ensure_topics
from libs.stack.catchup import end_offsets, passed_by
from libs.stack.partitioned import partition_ends
from libs.stack.processor import Processor, Snapshots, make_app, serve_http
from libs.stack.runtime import service_settings, setup_logging
from services.billing import router
from services.billing.partitioned import BillingPartitions
from services.billing.replay import replay
from services.billing.settings import BillingSettings
from services.billing.worker import INPUTS, OWN_OUTPUTS, REPLAY_QUIET_S, BillingState, alarm_config

GROUP = "meterflow-billing"  # the Faust app id: the consumer group of router and books


@dataclass
class Billing:
    """The two processors of a billing worker."""

    router: Processor
    books: Processor

    @property
    def processors(self) -> tuple[Processor, Processor]:
        return (self.router, self.books)


def build(
    settings: BillingSettings, bootstrap: str, clock: Callable[[], float] | None = None
) -> tuple[faust.App, Billing]:
    """The Faust app with billing's router and books attached; ``clock`` (epoch seconds) is the
    time allowance plans are judged at (default: the wall clock)."""
    alarms = alarm_config(settings.billing_alarm_level1_fen, settings.billing_alarm_level2_fen)

    async def ends() -> dict[str, int]:
        # mf.billing-in's end counts once the router has passed what mf.billing holds now: an
        # allowance grant already on mf.billing but not yet routed is history, not news
        await passed_by(bootstrap, GROUP, [BILLING.name], REPLAY_QUIET_S)
        return await end_offsets(bootstrap, [BILLING_IN.name])

    def partition(p: int) -> BillingState:
        return BillingState(
            alarms,
            settings.freeze_schedule,
            clock=clock,
            end_offsets=partition_ends(ends, p),
        )

    books = BillingPartitions(partition)
    app = make_app(GROUP, bootstrap, settings.snapshot_dir / "faust", settings.billing_faust_port)
    routing = router.Router()
    snapshots = settings.snapshot_dir / "snapshots"
    billing = Billing(
        Processor(
            app, bootstrap, "billing-router", router.INPUTS, routing, routing, Snapshots(snapshots / "router"),
            batch_size=settings.billing_batch_size, snapshot_every=settings.billing_snapshot_every_s,
            group_of=router.group_of, ignore=router.IGNORED, stateless=router.is_stateless,
        ),
        Processor(
            app, bootstrap, "billing", INPUTS, books, books, Snapshots(snapshots / "books"),
            batch_size=settings.billing_batch_size, snapshot_every=settings.billing_snapshot_every_s,
            ignore=OWN_OUTPUTS, tick_every=settings.billing_allowance_tick_s,
        ),
    )  # fmt: skip
    _serve_health(app, billing, settings.billing_http_port)
    return app, billing


def _serve_health(app: faust.App, billing: Billing, port: int) -> None:
    registry = CollectorRegistry()
    events = Counter("mf_billing_events", "facts folded by the books", registry=registry)
    outputs = Counter("mf_billing_outputs", "facts emitted by the books", registry=registry)
    routed = Counter("mf_billing_router_events", "facts read by the router", registry=registry)
    dead = Counter(
        "mf_billing_dead_letters", "inputs parked on mf.dead-letter (router and books)", registry=registry
    )
    accounts = Gauge(
        "mf_billing_accounts", "accounts in the books of the partitions owned", registry=registry
    )
    waiting = Gauge("mf_billing_waiting_facts", "facts waiting for what they need", registry=registry)
    unbound = Gauge(
        "mf_billing_router_waiting_facts", "facts of meters not bound to an account yet", registry=registry
    )
    owned = Gauge(
        "mf_billing_partitions_owned", "partitions this worker folds", ["processor"], registry=registry
    )
    parked = Gauge(
        "mf_billing_parked_replacements",
        "meter replacements waiting for the meter's first reading after them",
        registry=registry,
    )
    seen = {"events": 0, "outputs": 0, "routed": 0, "dead_letters": 0}
    web = FastAPI(title="meterflow billing", docs_url=None, redoc_url=None)

    @web.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @web.get("/readyz")
    def readyz(response: Response) -> dict[str, object]:
        # Ready once assigned and no partition is being restored or caught up: a replica owning
        # nothing (more replicas than partitions) is ready and idle.
        ready = all(p.assigned and not p.catching_up for p in billing.processors)
        response.status_code = 200 if ready else 503
        books, routing = billing.books.stats, billing.router.stats
        return {
            "ready": ready,
            "partitions": sorted(billing.books.owned),
            "meter_partitions": sorted(g for g in billing.router.owned if g < router.STATELESS),
            "catching_up": billing.books.catching_up + billing.router.catching_up,
            "records": books.records,
            "events": books.events,
            "routed": routing.events,
            "snapshots": books.snapshots + routing.snapshots,
            # parked, not fatal: readiness does not depend on it
            "dead_letters": books.dead_letters + routing.dead_letters,
        }

    @web.get("/metrics")
    def metrics() -> Response:
        books, routing = billing.books.stats, billing.router.stats
        parked_total = books.dead_letters + routing.dead_letters
        events.inc(books.events - seen["events"])
        outputs.inc(books.outputs - seen["outputs"])
        routed.inc(routing.events - seen["routed"])
        dead.inc(parked_total - seen["dead_letters"])
        seen.update(
            events=books.events, outputs=books.outputs, routed=routing.events, dead_letters=parked_total
        )
        state, routing_state = billing.books.handler, billing.router.handler
        if isinstance(state, BillingPartitions):
            accounts.set(state.accounts)
            waiting.set(state.waiting)
            parked.set(state.parked)
        if isinstance(routing_state, router.Router):
            unbound.set(routing_state.waiting)
        owned.labels("books").set(len(billing.books.owned))
        owned.labels("router").set(len([g for g in billing.router.owned if g < router.STATELESS]))
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
