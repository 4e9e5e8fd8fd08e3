"""The billing books: the pure :class:`~services.billing.domain.books.Books` of one partition of
mf.billing-in behind the stream processor runtime (:mod:`libs.stack.processor`).

Billing joins facts keyed by meter (readings, registry) with facts keyed by account (money) and
by tariff. Billing's router (:mod:`services.billing.router`) re-keys them all onto mf.billing-in by
account (reference facts to every partition), so the books of one partition hold everything its
accounts need: :class:`BillingState` is the state of one partition, and
:mod:`services.billing.partitioned` keeps one per partition a replica owns. Outputs carry ids
derived from their causes, so a replay after a crash produces the same events and downstream
consumers drop the repeats by id.

The router forwards facts from several topics in the order it fetches them, and a meter's facts
wait there until the meter is bound. So that the books come out the same whatever that order, a reading
waits (in order, per meter) until its meter is registered, assigned to an account and every
tariff of that account is known, and a money fact or a tariff change waits until its account is
opened. The domain charges by event time, so a reading applied late gives the same charge as one
applied at once.

A meter's replacement or clear (``MeterReplaced``, on mf.registry) and its readings (mf.readings)
must be folded in the order of their times, whichever the consumer fetches first. So the two wait
for each other: a ``MeterReplaced`` is *parked* until the first reading at or after its
``replaced_at`` (applied just before that reading; the readings before it are applied as they
come), and a reading whose ``registers_since`` names a replacement not yet folded waits in its
meter's queue until it arrives. A replacement with no later reading stays parked (it is in the
snapshot; :attr:`BillingState.parked` counts them). One that arrives after a reading at or past
its time was already folded is applied at once, as the domain's out-of-order rule says.

Allowance plans (:mod:`~services.billing.domain.allowances`) are the one thing billing does on a
clock: :meth:`BillingState.tick` emits the allowances due onto mf.billing, which the router brings back,
where they are folded like any allowance (and a replay finds them in the log). A grant emitted is
not emitted again until it comes back (or :data:`PENDING_RETRY_S` passes); after a restore none is
emitted until mf.billing-in is applied up to where it ended then, so grants already in the log are
seen first. Either way a repeat carries the same id and the ledger drops it.

A fact whose fold raises is rejected (:attr:`BillingState.rejected`, dead-lettered by the
processor) and the fold goes on; so is a fact released from a queue whose fold raises, and the
rest of its queue goes on. The known poison is a ``TariffPublished`` whose definition does not
parse: it is rejected when folded (``TariffError`` naming the field), never enters the books, and
readings of accounts on that tariff keep waiting for a valid one, which releases them. A fact that
raises leaves the books as they were (:meth:`~services.billing.domain.books.Books.handle` computes
before it assigns; see there for the one exception, after a reading is priced); the meters ready to
skip the waiting checks are looked at again after any rejection.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from libs.events.acquisition import MeterRegistered, MeterReplaced, ReadingRecorded
from libs.events.base import Event
from libs.events.billing import (
    LEDGER_FACTS,
    AccountOpened,
    AccountTariffChanged,
    AlarmThresholdsSet,
    AllowanceAccepted,
    AllowancePlanSet,
    TariffPublished,
)
from libs.events.codec import Codec, pack_events
from libs.events.topics import BILLING_IN, CATALOGUE
from libs.stack.catchup import CatchUp, EndOffsets
from libs.stack.deadletter import Rejected, reject
from libs.stack.processor import Inbound, Outbound
from libs.stack.snapshot import Blob, ChunkedPickle, load_chunked
from services.billing.domain import allowances
from services.billing.domain.alarms import AlarmConfig, AlarmPolicy
from services.billing.domain.books import MONEY, Books
from services.billing.domain.settlement import FreezeSchedule

log = logging.getLogger(__name__)
SNAPSHOT_VERSION = 9  # bump when the books' shape changes: older snapshots are rebuilt from the log
MAX_WAITING = 10_000  # per meter or account; beyond it the oldest waiting fact is dropped (logged)

# Billing's own outputs (on mf.ledger, which billing does not read; on mf.billing in logs written
# before that topic existed): consequences, never causes — skipped before validation.
OWN_OUTPUTS = frozenset(cls.TYPE for cls in LEDGER_FACTS)
ACCOUNT_FACTS = (*MONEY, AccountTariffChanged)  # wait, in order, until their account is opened
# facts after which waiting facts may go on (BillingState._unblocked says which)
RELEASING = (MeterRegistered, TariffPublished, AccountOpened, MeterReplaced, AccountTariffChanged)
PARTITIONS = {topic.name: topic.partitions for topic in CATALOGUE}
INPUTS = (BILLING_IN.name,)  # everything billing folds, routed by services/billing/router.py
ENCODE_EVERY = 1_000  # output facts
PENDING_RETRY_S = 300.0  # an allowance emitted but not back by then is emitted again (same id)
REPLAY_QUIET_S = 30.0  # no end offsets, or an undecodable last record: caught up once this quiet
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_READY: Final = EPOCH  # no meter's replacement time (those are at or after the registration)


class BillingState:
    """Handler and partition state of the billing processor."""

    def __init__(
        self,
        alarm_config: AlarmConfig | None = None,
        freeze_schedule: FreezeSchedule | None = None,
        clock: Callable[[], float] | None = None,
        end_offsets: EndOffsets | None = None,
    ) -> None:
        """``clock`` (epoch seconds) replaces the processor's time in :meth:`tick` (tests);
        ``end_offsets`` reads the end offsets of the state's partition of mf.billing-in (None: never
        hold allowances back)."""
        self.alarm_config = alarm_config or AlarmConfig()
        self.freeze_schedule = freeze_schedule or FreezeSchedule()
        self.clock = clock
        # mf.billing-in read up to its end at restore before any allowance is emitted
        self.catchup = CatchUp("billing", end_offsets, REPLAY_QUIET_S)
        self.codec = Codec()
        self.applied = 0
        self.dropped = 0
        self.rejected: list[Rejected] = []  # facts whose fold raised, drained by the processor
        self._record: Inbound | None = None  # the record being handled (for facts it releases)
        self._reset()

    def _reset(self) -> None:
        self.books = Books(self.alarm_config, freeze_schedule=self.freeze_schedule)
        self.registered: set[tuple[str, str]] = set()  # (project, meter)
        self.waiting: dict[str, list[Event]] = {}
        # meters whose next reading can be applied at once, if it counts its registers from the
        # meter's last replacement applied (the value: its time, None if none): it waits for
        # nothing, no reading of theirs waits in a queue and no replacement of theirs is parked
        # (invariant: emptied whenever any other fact is applied)
        self.ready: dict[tuple[str, str], datetime | None] = {}
        # (project, meter) -> replacements waiting for the meter's first reading at or after them
        self.parked: dict[tuple[str, str], list[MeterReplaced]] = {}
        self.plans: dict[allowances.Key, allowances.Plan] = {}
        self.catchup.reset()
        self.pending: dict[str, float] = {}  # allowance id emitted → when (monotonic), until back
        self.quiet_until = EPOCH  # no allowance falls due before, unless a fact changes the books

    def restore(self, partition: int, blob: Blob | None) -> None:
        """Load the books from a snapshot (or start empty: the log is replayed)."""
        self._reset()
        positions: dict[str, int] = {}
        if blob:  # SnapshotRejected for another version: the processor rebuilds from the log
            doc = load_chunked(
                blob, lambda d: isinstance(d, tuple) and len(d) == 7 and d[0] == SNAPSHOT_VERSION
            )
            _, self.books, self.registered, self.waiting, self.parked, self.plans, positions = doc
        # configuration wins over the snapshot's
        self.books.alarm_config, self.books.freeze_schedule = self.alarm_config, self.freeze_schedule
        self.catchup.begin(dict(positions))

    def snapshot(self, partition: int) -> ChunkedPickle:
        """The books, pickled later in pieces from a shallow copy taken now (consistent: entries
        are immutable), so the processor can write them without holding the event loop."""
        doc = (
            SNAPSHOT_VERSION,
            self.books.copy(),
            set(self.registered),
            {k: list(v) for k, v in self.waiting.items()},
            {k: list(v) for k, v in self.parked.items()},
            dict(self.plans),
            dict(self.catchup.positions),
        )
        return ChunkedPickle(doc)

    def forget(self, partition: int) -> None:
        """The worker lost its partitions in a rebalance: drop the books until reassigned."""
        self._reset()

    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Fold every event of the batch; return the facts billing emits, encoded.

        Outputs are encoded every :data:`ENCODE_EVERY` facts: the events themselves are dropped
        early instead of all living until the batch ends (fewer objects for the GC to walk).
        """
        encoded: list[Outbound] = []
        out: list[Event] = []
        for record in batch:
            self._record = record
            if record.topic == BILLING_IN.name:
                self.catchup.note(record.topic, record.partition, record.offset)
            for fact in record.events:
                try:
                    out += self.fold(fact)
                except Exception as exc:  # parked by the processor; every other fact goes on
                    self.ready.clear()  # the fact may have changed what a meter waits for
                    reject(self.rejected, record, fact, exc)
                if len(out) >= ENCODE_EVERY:
                    encoded += self._encode(out)
                    out = []
        return encoded + self._encode(out) if out else encoded

    def _encode(self, out: list[Event]) -> list[Outbound]:
        # Packed per partition (one message per topic-partition and batch, not one per fact): a
        # reading causes two or more facts, and one produce call per fact would cap the worker.
        packed = pack_events(out, PARTITIONS.__getitem__, codec=self.codec)
        return [Outbound(topic, m.key, m.value, m.partition) for topic, m in packed]

    def tick(self, now: float) -> list[Outbound]:
        """The allowances due at ``now`` (or the injected clock's time), encoded."""
        if not self._caught_up():
            return []
        at = datetime.fromtimestamp(self.clock() if self.clock is not None else now, UTC)
        return self._encode(list(self.allowances_due(at)))

    def allowances_due(self, now: datetime) -> list[AllowanceAccepted]:
        """The allowances the plans call for at ``now``, less those emitted and not back yet."""
        if now < self.quiet_until and not self.pending:
            return []  # nothing changed and no period began since the last look
        at, fresh, pending = time.monotonic(), [], {}
        for grant in allowances.due(self.plans, self.books.accounts, now):
            emitted = self.pending.get(grant.event_id)
            if emitted is None or at - emitted >= PENDING_RETRY_S:
                fresh.append(grant)
                emitted = at
            pending[grant.event_id] = emitted
        self.pending = pending  # only what is still due stays (the rest came back, or its plan stopped)
        self.quiet_until = allowances.next_due(self.plans, now)
        if fresh:
            log.info("billing: %d allowances of allowance plans due at %s", len(fresh), now.isoformat())
        return fresh

    def fold(self, fact: Event) -> list[Event]:
        """Apply one fact now, or queue it behind what it waits for; return what it caused."""
        if type(fact) is ReadingRecorded and (
            (since := self.ready.get((fact.project_id, fact.meter_id), _NOT_READY)) is not _NOT_READY
            and (fact.registers_since is None or fact.registers_since == since)
        ):
            self.applied += 1  # the hot path: a meter whose readings have nothing to wait for
            return self.books.handle(fact)
        # A replacement never queues (it has no queue key): it is parked at once (parking is
        # order-free, and readings queued before it may be waiting for it).
        blocked = None if isinstance(fact, MeterReplaced) else self._waits_for(fact)
        key = blocked or self._queue_key(fact)
        if blocked is not None or (key and key in self.waiting):  # keep each queue's order
            queue = self.waiting.setdefault(key, [])
            queue.append(fact)
            if len(queue) > MAX_WAITING:
                queue.pop(0)
                self.dropped += 1
                log.warning("billing: more than %d facts wait for %s; dropped the oldest", MAX_WAITING, key)
            return []
        out = self._apply(fact)
        if type(fact) is ReadingRecorded:
            meter = (fact.project_id, fact.meter_id)
            if meter not in self.parked:
                self.ready[meter] = self.books.meters[meter].replaced_at
        else:
            # Any other fact may change what a meter's readings wait for (a tariff change to a
            # tariff not published yet, a meter moved to another account): look again.
            self.ready.clear()
        if isinstance(fact, RELEASING):
            out += self._release(self._unblocked(fact))
        return out

    def _unblocked(self, fact: Event) -> list[str] | None:
        """The queues a :data:`RELEASING` fact may release (None: any). Looking at every queue
        after each registration or opening made a replay quadratic: ~20,000 meters waiting for
        their accounts, each opening looked at all of them (~1,400 facts/s)."""
        p = fact.project_id
        if isinstance(fact, (MeterRegistered, MeterReplaced)):
            return [f"meter:{p}/{fact.meter_id}"]
        if isinstance(fact, AccountOpened):  # the account's own facts first: a tariff change
            # among them must be applied before the readings it prices
            return [f"account:{p}/{fact.account_id}", *(f"meter:{p}/{m}" for m in fact.meter_ids)]
        if isinstance(fact, AccountTariffChanged):  # its meters may now use a tariff known
            account = self.books.accounts.get((p, fact.account_id))
            return [] if account is None else [f"meter:{p}/{m}" for m in account.meter_ids]
        return None  # a tariff: rare, and any meter's account may use it

    def _apply(self, fact: Event) -> list[Event]:
        # the books first: a fact they refuse (raise) is noted nowhere else
        if isinstance(fact, MeterReplaced):
            out = self._replaced(fact)
        elif isinstance(fact, ReadingRecorded) and (fact.project_id, fact.meter_id) in self.parked:
            out = self._unpark(fact) + self.books.handle(fact)
        else:
            out = self.books.handle(fact)
        if isinstance(fact, MeterRegistered):
            self.registered.add((fact.project_id, fact.meter_id))
        self.applied += 1
        if isinstance(fact, AllowancePlanSet):
            self.plans = allowances.apply(self.plans, fact)
        elif isinstance(fact, AllowanceAccepted):
            self.pending.pop(fact.event_id, None)
        if isinstance(fact, (AllowancePlanSet, AccountOpened, AccountTariffChanged)):
            self.quiet_until = EPOCH  # who is granted what may have changed: look again
        return out

    def _replaced(self, fact: MeterReplaced) -> list[Event]:
        """Park the replacement until its meter's first reading at or after it (see the module
        doc); apply it now when such a reading was folded already (and the meter's account and
        tariffs are still known: else it goes with the meter's next reading)."""
        key = (fact.project_id, fact.meter_id)
        meter = self.books.meters.get(key)
        read = [] if meter is None else [s.time for s in (meter.last, meter.suspect) if s is not None]
        if read and max(read) >= fact.replaced_at and self._waits_for(fact) is None:
            return self.books.handle(fact)
        self.parked.setdefault(key, []).append(fact)
        return []

    def _unpark(self, reading: ReadingRecorded) -> list[Event]:
        """Apply, in order, the parked replacements of the reading's meter at or before it."""
        key = (reading.project_id, reading.meter_id)
        at = reading.meter_time or reading.received_at
        parked = self.parked.pop(key)
        out: list[Event] = []
        while parked and parked[0].replaced_at <= at:
            out += self._released(parked.pop(0), self.books.handle)
        if parked:
            self.parked[key] = parked
        return out

    def _queue_key(self, fact: Event) -> str:
        if isinstance(fact, ReadingRecorded):
            return f"meter:{fact.project_id}/{fact.meter_id}"
        if isinstance(fact, ACCOUNT_FACTS) or (isinstance(fact, AlarmThresholdsSet) and fact.account_id):
            return f"account:{fact.project_id}/{fact.account_id}"
        return ""

    def _waits_for(self, fact: Event) -> str | None:
        """The queue a fact must wait in, or None when it can be applied now."""
        books, p = self.books, fact.project_id
        if isinstance(fact, (ReadingRecorded, MeterReplaced)):  # a replacement: applied now?
            account = books.account_of(p, fact.meter_id)
            if (
                (p, fact.meter_id) not in self.registered
                or account is None
                or any((p, t) not in books.tariffs for t in account.tariff_ids)
                or (isinstance(fact, ReadingRecorded) and not self._replacement_known(fact))
            ):
                return f"meter:{p}/{fact.meter_id}"
        elif (isinstance(fact, ACCOUNT_FACTS) and (p, fact.account_id) not in books.accounts) or (
            isinstance(fact, AlarmThresholdsSet)
            and fact.account_id
            and (p, fact.account_id) not in books.accounts
        ):
            return f"account:{p}/{fact.account_id}"
        return None

    def _replacement_known(self, reading: ReadingRecorded) -> bool:
        """Whether the replacement the reading counts its registers from is applied or parked."""
        since = reading.registers_since
        if since is None:
            return True
        key = (reading.project_id, reading.meter_id)
        meter = self.books.meters.get(key)
        known = [r.replaced_at for r in self.parked.get(key, ())]
        if meter is not None and meter.replaced_at is not None:
            known.append(meter.replaced_at)
        return any(since <= t for t in known)

    def _release(self, keys: list[str] | None = None) -> list[Event]:
        """Apply, in order, the facts at the head of each queue (of ``keys``; None: of all) that
        no longer wait, and of the queues those facts release in turn."""
        out: list[Event] = []
        # In order: an account's queue (its tariff changes) before its meters' readings.
        work = collections.deque(self.waiting if keys is None else keys)
        while work:
            key = work.popleft()
            queue = self.waiting.get(key)
            if not queue or self._waits_for(queue[0]) is not None:
                continue
            del self.waiting[key]
            i = 0
            while i < len(queue) and self._waits_for(queue[i]) is None:
                fact = queue[i]
                out += self._released(fact, self._apply)
                i += 1
                if isinstance(fact, RELEASING):  # a tariff change released from its account's queue
                    more = self._unblocked(fact)
                    work.extend(self.waiting if more is None else more)
            if i < len(queue):  # readings waiting for a replacement not here yet
                self.waiting[key] = queue[i:]
        return out

    def _released(self, fact: Event, apply: Callable[[Event], list[Event]]) -> list[Event]:
        """``apply(fact)`` for a fact that waited: one that raises is rejected, and the facts
        waiting behind it go on (raised to the caller, they would all be lost with its queue)."""
        try:
            return apply(fact)
        except Exception as exc:
            if self._record is None:  # folded outside handle() (a replay): the caller decides
                raise
            self.ready.clear()
            reject(self.rejected, self._record, fact, exc, waited=True)
            return []

    def _caught_up(self) -> bool:
        """Whether mf.billing-in is applied up to its end at the restore (or has been quiet since)."""
        if self.catchup.finished():
            log.info("billing: mf.billing-in applied up to its end at restore; allowance plans run")
        return not self.catchup.replaying


def alarm_config(level1_fen: int, level2_fen: int) -> AlarmConfig:
    """The default thresholds from settings (per-project and per-account ones come later)."""
    return AlarmConfig(default=AlarmPolicy(level1_fen=level1_fen, level2_fen=level2_fen))
