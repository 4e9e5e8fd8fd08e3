"""Publishing facts: one aiokafka producer, each fact awaited (acks=all) before the API answers."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from libs.events.base import Event
from libs.events.codec import Codec


class Writer:
    """Sends facts to their topics, keyed by subject (no idempotent producer: see BROKER-NOTES)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.codec = Codec()
        self._producer: AIOKafkaProducer | None = None
        self.sent = 0

    async def start(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, *events: Event) -> None:
        """Send ``events`` and wait until the broker has them all."""
        if self._producer is None:
            raise RuntimeError("writer not started")
        futures = [await self._producer.send(e.TOPIC, self.codec.encode(e), key=e.key) for e in events]
        for future in futures:
            await future
        self.sent += len(events)
