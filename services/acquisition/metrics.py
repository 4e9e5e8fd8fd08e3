"""Prometheus metrics of the acquisition service, on a registry of its own.

Bus counters are read from each route's :class:`libs.protocols.transaction.BusStats` at scrape
time (a custom collector, so nothing is counted twice); the latency histogram is fed from the
transaction records the workers leave behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from libs.stack.outbox import Outbox
from services.acquisition.engine import Engine

_COUNTERS = {
    "transactions": "transactions completed or failed",
    "attempts": "requests put on the bus, retries included",
    "timeouts": "attempts that ended without a frame",
    "bad_frames": "attempts that ended with a malformed frame",
    "retries": "retried attempts",
    "failures": "transactions that failed after all attempts",
    "bytes_sent": "bytes sent",
    "bytes_received": "bytes received",
}


class _BusCollector(Collector):
    def __init__(self, engine: Engine, outbox: Outbox | None, started: float) -> None:
        self.engine = engine
        self.outbox = outbox
        self.started = started

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["bus", "route"]
        families = {
            k: CounterMetricFamily(f"mf_acq_bus_{k}", text, labels=labels) for k, text in _COUNTERS.items()
        }
        busy = CounterMetricFamily("mf_acq_bus_busy_seconds", "seconds the bus lock was held", labels=labels)
        util = GaugeMetricFamily("mf_acq_bus_utilisation", "busy share since start", labels=labels)
        rate = GaugeMetricFamily("mf_acq_bus_transactions_per_second", "mean since start", labels=labels)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        for bus_id, worker in self.engine.workers.items():
            for via, link in worker.links.items():
                values = [bus_id, via or "primary"]
                stats = link.bus.stats
                for key, family in families.items():
                    family.add_metric(values, getattr(stats, key))
                busy.add_metric(values, stats.busy_seconds)
                util.add_metric(values, stats.utilisation(elapsed))
                rate.add_metric(values, stats.transactions / elapsed)
        yield from families.values()
        yield from (busy, util, rate)
        if self.outbox is not None:
            depth = GaugeMetricFamily("mf_acq_outbox_depth", "events waiting for Kafka")
            depth.add_metric([], len(self.outbox))
            yield depth
            delivered = CounterMetricFamily("mf_acq_outbox_delivered", "events delivered to Kafka")
            delivered.add_metric([], self.outbox.stats.delivered)
            yield delivered


class Metrics:
    """The service's collector registry: bus counters, outbox depth, latency histogram."""

    def __init__(self, engine: Engine, outbox: Outbox | None = None) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.registry.register(_BusCollector(engine, outbox, time.monotonic()))
        self.latency = Histogram(
            "mf_acq_transaction_seconds",
            "bus transaction latency (request to reply, retries included)",
            ["bus", "outcome"],
            buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0),
            registry=self.registry,
        )

    def observe(self) -> None:
        """Feed the histogram with the transactions finished since the last call."""
        for bus_id, worker in self.engine.workers.items():
            for record in worker.harvest():
                self.latency.labels(bus_id, record.outcome).observe(record.ended - record.started)

    def render(self) -> bytes:
        """The exposition text."""
        self.observe()
        return generate_latest(self.registry)
