"""The read model's Kafka side: one aiokafka consumer (manual assignment, no consumer group —
every replica reads everything) folding the API's topics into :class:`~services.api.views.Views`.

Ready means caught up: every partition's position has reached the end offset seen at start and
the high-watermark of the latest fetch (the embedded broker under-reports ListOffsets, see
shared/BROKER-NOTES.md, so the fetch's own high-watermark has the last word).

Writers wait for their effect with :meth:`ReadModel.wait_until`: the loop wakes every waiter
after each fetched batch, and a waiter re-checks its condition against the views.

Beside the views the loop folds allowance plans and the send log (:mod:`services.api.sendlog`:
every request and outcome of mf.notifications, the newest ``sends_kept`` per project).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.events.billing import AllowancePlanSet
from libs.events.codec import Codec, EventDecodeError
from libs.events.topics import (
    ALARMS,
    BILLING,
    COMM,
    COMMANDS,
    IAM,
    LEDGER,
    NOTIFICATIONS,
    REGISTRY_TOPIC,
    TARIFFS,
)
from services.api.records import ProjectTable
from services.api.sendlog import FACTS as SEND_FACTS
from services.api.sendlog import SENDS_KEPT, SendLog
from services.api.views import Views

log = logging.getLogger(__name__)
TOPICS = (IAM, REGISTRY_TOPIC, COMM, TARIFFS, BILLING, LEDGER, ALARMS, COMMANDS, NOTIFICATIONS)
T = TypeVar("T")


class ReadModel:
    """Consumes the API's topics into ``views``; ``ready`` once caught up."""

    def __init__(self, bootstrap: str, views: Views | None = None, sends_kept: int = SENDS_KEPT) -> None:
        self.bootstrap = bootstrap
        self.views = views or Views()
        # the send log (services/api/sendlog.py), beside the views: bounded per project
        self.sends = SendLog(sends_kept)
        # allowance plans (services/api/allowance_plans.py), beside the views: each plan's latest fact
        self.allowance_plans: ProjectTable[AllowancePlanSet] = ProjectTable()
        self.allowance_plan_ids: set[str] = set()
        self.codec = Codec()
        self.ready = asyncio.Event()
        self.records = 0
        self.decode_errors = 0
        self._changed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._targets: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Connect, assign every partition from the beginning, and start folding."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20,
            auto_offset_reset="earliest",
        )  # fmt: skip
        await consumer.start()
        try:
            tps = [TopicPartition(t.name, p) for t in TOPICS for p in range(t.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._targets = dict(await consumer.end_offsets(tps))
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name="api-readmodel")

    async def stop(self) -> None:
        """Stop folding and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def failed(self) -> BaseException | None:
        """The error that ended the consumer loop, if it ended."""
        if self._task is None or not self._task.done() or self._task.cancelled():
            return None
        return self._task.exception()

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batch.values():
                for record in records:
                    self.records += 1
                    if record.value is None:
                        continue
                    try:
                        events = self.codec.decode(record.value)
                    except EventDecodeError as exc:
                        self.decode_errors += 1
                        log.warning(
                            "read model: undecodable record at %s:%d: %s", record.topic, record.offset, exc
                        )
                        continue
                    for event in events:
                        self.views.apply(event)
                        if isinstance(event, AllowancePlanSet):
                            self._plan(event)
                        elif isinstance(event, SEND_FACTS):
                            self.sends.apply(event)
            if not self.ready.is_set() and await self._caught_up(consumer):
                self.ready.set()
                log.info("read model caught up: %d records", self.records)
            self._changed.set()
            self._changed = asyncio.Event()

    def _plan(self, fact: AllowancePlanSet) -> None:
        """The latest fact of a plan in log order wins, as in billing; a redelivered one is dropped."""
        if fact.event_id not in self.allowance_plan_ids:
            self.allowance_plan_ids.add(fact.event_id)
            self.allowance_plans[(fact.project_id, fact.plan_id)] = fact

    async def _caught_up(self, consumer: AIOKafkaConsumer) -> bool:
        for tp, target in self._targets.items():
            position = await consumer.position(tp)
            highwater = consumer.highwater(tp)
            if position < max(target, highwater or 0):
                return False
        return True

    async def wait_until(self, check: Callable[[], T | None], timeout: float) -> T | None:
        """``check()`` once it is not None, re-checked after every folded batch; None on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (value := check()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return check()
        return value
