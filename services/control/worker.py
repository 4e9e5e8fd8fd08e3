"""The control worker: the pure policy and command-lifecycle folds behind the stream processor
runtime (:mod:`libs.stack.processor`).

Control joins facts keyed by meter (readings, registry, commands, operator facts) with facts
keyed by account (arrears alarms, ``AccountOpened`` for the directory) and reference facts
(tariffs, for parameter downloads). Its router (:mod:`services.control.router`) re-keys all but
readings and registry onto mf.control-in by meter, so a :class:`ControlState` is the state of one
meter partition (``owns``: its meters) and any number of replicas share the partitions
(:mod:`libs.stack.partitioned`).

Per meter the worker keeps a :class:`~services.control.domain.policy.MeterPolicy` (what the
supply should be) and a :class:`~services.control.domain.lifecycle.MeterCommands` (what became of
each command). Rules of the loop around them:

- **Own outputs are applied at once** and deduplicated by event id when they come back from
  ``mf.commands`` / ``mf.alarms``: control never answers a ``CommandRequested`` (the policy
  records it), so it cannot loop on its own commands.
- **Retries**: acquisition executes each ``command_id`` once and reports every failure as final
  (``will_retry=False``). Control therefore re-judges a failure by its reason (no reply, bad
  reply, transport, not confirmed: retry; rejected, unsupported: final) and carries attempt n
  as a new ``CommandRequested`` whose id derives from (command id, n) and whose
  ``params["retry_of"]`` names the command. Sender facts about an attempt are translated back to
  the command (``attempt`` = n) before the lifecycle fold sees them.
- **Time**: :meth:`ControlState.tick` runs the lifecycle's timeouts (→ ``CommandTimedOut`` and a
  ``command_timeout`` alarm), due retries, and the policy's own wake-ups (restore delays,
  schedule boundaries, socket resets). Policy wake-ups are decided *at the wake moment*, not at
  the wall clock, so their command ids — derived from that moment — are the same on a replay.
- **Abandonments**: a command that ends unacknowledged (last attempt failed or timed out, a reason
  not retried, its deadline, superseded) is published once as ``CommandAbandoned``, right after
  the fact that ended it: other services learn the end from it, not from the retry rule. Ends
  met while folding a replay are held like commands; at the replay's end those the log lacks are
  sent (on the first start after an upgrade: the retained history's, stamped with their old time).
- Fact-driven decisions happen at ``max(meter clock, fact time)``; command ids derive from the
  causing fact's id, so redelivery and replay re-produce the same ids.
- **Replay holds decisions.** After a restore the processor replays the log from the snapshot's
  offsets, one partition after another, so facts from different topics meet in another order
  than they did live (an arrears alarm before the keep-power set earlier). Records below the end
  offsets found at restore are *historic*: they are folded, and the commands they would cause are
  held (the latest per meter and channel) instead of sent. Once every input partition has been
  applied up to those offsets (or no historic record came for ``REPLAY_QUIET_S``), each held
  command that the log does not already hold and that the final state still wants is sent, with
  its deterministic id. The clock (timeouts, retries, wakes) is held during the replay too: an
  acknowledgement not yet replayed is not a timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from libs.events.acquisition import MeterRegistered, ReadingRecorded
from libs.events.base import Event, event_id_for
from libs.events.billing import (
    LEDGER_FACTS,
    AccountOpened,
    AccountTariffChanged,
    AlarmCleared,
    AlarmKind,
    AlarmRaised,
    AlarmThresholdsSet,
    TariffPublished,
)
from libs.events.codec import Codec
from libs.events.control import (
    RETRIABLE_REASONS,
    Action,
    BatchRequested,
    CommandAbandoned,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
    CommandSent,
    CommandTimedOut,
    OperatorFact,
)
from libs.events.topics import CONTROL_IN, READINGS, REGISTRY_TOPIC
from libs.stack.catchup import CatchUp, EndOffsets
from libs.stack.deadletter import Rejected, reject
from libs.stack.processor import Inbound, Outbound
from libs.stack.snapshot import Blob, ChunkedPickle, load_chunked
from services.control.domain import batch as batches
from services.control.domain import directory as dirs
from services.control.domain import lifecycle, parameters, policy
from services.control.domain.lifecycle import ENDED, CommandView, MeterCommands, RetryPolicy
from services.control.domain.policy import MeterPolicy

# Co-partitioned by meter: everything else control folds comes through its router
# (services/control/router.py) on mf.control-in.
INPUTS = (REGISTRY_TOPIC.name, READINGS.name, CONTROL_IN.name)
# Meter models that keep prices and alarm limits themselves (local prepaid, 本地费控): they get
# parameter downloads. DDSY / DTSY / DSSY: single-phase, three-phase four-wire and three-wire
# prepaid electricity meters (GB/T 17215 model codes). Remote-prepaid meters need none.
PARAMETER_MODELS = ("DDSY", "DTSY", "DSSY")
RETRIABLE = RETRIABLE_REASONS
LIFECYCLE = (
    CommandRequested, CommandSent, CommandAcknowledged, CommandFailed, CommandTimedOut, CommandAbandoned,
)  # fmt: skip
POLICY = (MeterRegistered, AlarmRaised, AlarmCleared, ReadingRecorded, CommandRequested, OperatorFact)
# Billing's per-reading consequences (mf.ledger, not an input; mf.billing in older logs): skipped
# before validation (thousands a second on a busy site).
UNUSED = frozenset(cls.TYPE for cls in LEDGER_FACTS)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPLAY_QUIET_S = 5.0
SNAPSHOT_VERSION = 7  # bump when the state's shape changes: older snapshots are rebuilt from the log
COMPACT_EVERY = timedelta(minutes=10)  # how often the command index drops forgotten commands
MAX_WAKES_PER_TICK = 1000  # per meter: a schedule far behind catches up over several ticks

MeterKey = tuple[str, str]  # (project id, meter id)
log = logging.getLogger(__name__)


def retry_id(project_id: str, command_id: str, attempt: int) -> str:
    """The command id that carries attempt ``attempt`` (≥ 2) of ``command_id``."""
    return event_id_for(project_id, "retry", command_id, str(attempt))


@dataclass
class Meter:
    """The folds of one meter and when its policy needs the clock next."""

    policy: MeterPolicy
    commands: MeterCommands
    clock: datetime = EPOCH  # the latest instant the policy decided at
    wake: datetime | None = None


@dataclass
class Snapshot:
    directory: dirs.Directory
    meters: dict[MeterKey, Meter]
    attempts: dict[str, tuple[str, int]]
    index: dict[str, MeterKey]
    batches: dict[str, BatchRequested]
    active: set[MeterKey] = field(default_factory=set)
    positions: dict[str, int] = field(default_factory=dict)
    parameter_books: dict[str, parameters.ParameterBook] = field(default_factory=dict)
    models: dict[MeterKey, str] = field(default_factory=dict)
    version: int = 1  # snapshots before the version was recorded unpickle as 1
    # commands a replay under way holds (sent at its end if still wanted): a snapshot taken mid-
    # replay (a rebalance) that lost them left meters whose trip was never sent
    held: dict[MeterKey, dict[str, CommandRequested]] = field(default_factory=dict)


class ControlState:
    """Handler and partition state of the control processor."""

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        end_offsets: EndOffsets | None = None,
        parameter_models: Sequence[str] = PARAMETER_MODELS,
        stale_after_s: float | None = None,
        settle_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """``end_offsets`` reads the inputs' end offsets (None: never treat input as a replay);
        meters whose model starts with one of ``parameter_models`` get parameter downloads.
        ``stale_after_s``: alarms and readings older than that (by ``clock``) hold the commands
        they cause until the meter's stream has been quiet for ``settle_s`` (None: never).
        ``owns(meter_id)``: whether the meter is this state's (a partition's); facts naming
        several meters (an account's alarm, a batch) act on its own only (None: every meter)."""
        self.owns = owns
        self.retry = retry or RetryPolicy()
        self.stale_after_s, self.settle_s, self.clock = stale_after_s, settle_s, clock
        self.parameter_models = tuple(parameter_models)
        self.catchup = CatchUp("control", end_offsets, REPLAY_QUIET_S)  # the replay after a restore
        self.codec = Codec()
        self.rejected: list[Rejected] = []  # facts whose fold raised, drained by the processor
        self._reset()

    def _reset(self) -> None:
        self.directory = dirs.Directory()
        self.meters: dict[MeterKey, Meter] = {}
        self.attempts: dict[str, tuple[str, int]] = {}  # attempt command id → (command id, attempt)
        self.index: dict[str, MeterKey] = {}  # command id → its meter
        self.batches: dict[str, BatchRequested] = {}  # batch id → the request
        self.active: set[MeterKey] = set()  # meters with a command that has not ended
        self.catchup.reset()
        self.held: dict[MeterKey, dict[str, CommandRequested]] = {}  # meter → channel → command
        self.parameter_books: dict[str, parameters.ParameterBook] = {}  # per project (C8)
        self.models: dict[MeterKey, str] = {}  # meter → model, for parameter downloads
        self.settling: dict[MeterKey, float] = {}  # meter → when its stale facts' commands go out
        self.compacted_at = EPOCH
        self.touched: set[MeterKey] = set()  # meters with a command ended unreported by this fact

    # --- PartitionState -------------------------------------------------------------------
    def restore(self, partition: int, blob: Blob | None) -> None:
        """Load the state from a snapshot (or start empty: the log is replayed)."""
        self._reset()
        positions: dict[str, int] = {}
        if blob:
            # SnapshotRejected for another version: the processor rebuilds from the log
            snap: Snapshot = load_chunked(
                blob, lambda doc: isinstance(doc, Snapshot) and doc.version == SNAPSHOT_VERSION
            )
            self.directory, self.meters, self.attempts = snap.directory, snap.meters, snap.attempts
            self.index, self.batches, self.active = snap.index, snap.batches, snap.active
            positions = snap.positions
            self.parameter_books, self.models = snap.parameter_books, snap.models
            self.held = {k: dict(v) for k, v in snap.held.items()}
            for meter in self.meters.values():  # configuration wins over the snapshot's
                meter.commands = _with_policy(meter.commands, self.retry)
        self.catchup.begin(positions)

    def snapshot(self, partition: int) -> ChunkedPickle:
        """The state, pickled later in pieces from copies taken now (the folds are immutable; the
        containers and the per-meter records are copied), so it is written off the event loop."""
        # Meter(**vars(m)) is replace(m) without its per-call field walk: half the time on the
        # loop (~1 µs a meter), for a record whose fields are all init fields.
        snap = Snapshot(
            self.directory, {k: Meter(**vars(m)) for k, m in self.meters.items()}, dict(self.attempts),
            dict(self.index), dict(self.batches), set(self.active), dict(self.catchup.positions),
            dict(self.parameter_books), dict(self.models), SNAPSHOT_VERSION,
            {k: dict(v) for k, v in self.held.items()},
        )  # fmt: skip
        return ChunkedPickle(snap)

    def forget(self, partition: int) -> None:
        """The worker lost its partitions in a rebalance: drop the state until reassigned."""
        self._reset()

    # --- Handler ----------------------------------------------------------------------------
    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Fold every event of the batch; return the facts control emits, encoded.

        A fact whose fold raises is rejected (dead-lettered by the processor) and the rest go on.
        What it changed before raising stays: the folds are immutable values assigned per step,
        so that is whole steps — its parameter book (a parameter fact), the meters already
        judged (a fact routed to several meters) — never half a meter."""
        out: list[Event] = []
        for record in batch:
            historic = self.catchup.note(record.topic, record.partition, record.offset)
            for fact in record.events:
                try:
                    out += self.fold(fact, hold=historic)
                except Exception as exc:
                    reject(self.rejected, record, fact, exc)
        return self._encode(out + self._settle(time.time()))

    def tick(self, now: float) -> list[Outbound]:
        """Timeouts, retries and policy wake-ups due at ``now`` (epoch seconds); none in a replay."""
        out = self._settle(now)
        if not self.replaying:
            at = datetime.fromtimestamp(now, UTC)
            out += self._settled(now) + self.due(at) + self._parameters_due(at)
        return self._encode(out)

    def _settled(self, now: float) -> list[Event]:
        """Commands held for stale facts of meters whose stream has been quiet long enough."""
        ready = [key for key, at in self.settling.items() if at <= now]
        for key in ready:
            del self.settling[key]
        return self._release(datetime.fromtimestamp(now, UTC), ready)

    def _encode(self, events: list[Event]) -> list[Outbound]:
        events = events + self._abandoned()  # ended by held commands released, parameters due …
        return [Outbound(e.TOPIC, e.key, self.codec.encode(e)) for e in events]

    # --- the fold ---------------------------------------------------------------------------
    def fold(self, fact: Event, hold: bool = False) -> list[Event]:
        """Apply one fact; return the facts it causes (already applied to the state).

        ``hold``: the fact is historic (a replay): commands it causes are held, not returned."""
        out = self._parameters(fact) + self._fold(fact, hold)
        return out + self._abandoned(hold)

    def _fold(self, fact: Event, hold: bool) -> list[Event]:
        if isinstance(fact, AccountOpened):
            self.directory = dirs.apply(self.directory, fact)
            return []
        if isinstance(fact, BatchRequested):
            return self._batch(fact)
        if isinstance(fact, AlarmRaised | AlarmCleared):
            if fact.kind is not AlarmKind.ARREARS:
                return []  # other alarms (ours included) drive no relay
            meter_ids = dirs.route(self.directory, fact)
            self.directory = dirs.apply(self.directory, fact)
        elif isinstance(fact, CommandRequested) and "retry_of" in fact.params:
            self._note_attempt(fact)
            return []  # an attempt of a known command: its sender facts are translated
        elif isinstance(fact, ReadingRecorded):
            meter = self.meters.get((fact.project_id, fact.meter_id))
            rules = meter is not None and (
                meter.policy.load_limit is not None or meter.policy.malignant_rule is not None
            )
            if not rules:
                return []  # only load and malignant-load rules look at readings
            meter_ids = (fact.meter_id,)
        elif isinstance(fact, POLICY + LIFECYCLE):
            fact = self._translate(fact)
            meter_ids = dirs.route(self.directory, fact)
        else:
            return []
        out: list[Event] = []
        for meter_id in meter_ids if self.owns is None else [m for m in meter_ids if self.owns(m)]:
            stale = not hold and self._stale(fact, (fact.project_id, meter_id))
            out += self._on_meter(self._meter(fact.project_id, meter_id), fact, hold or stale)
        return out

    def _stale(self, fact: Event, key: MeterKey) -> bool:
        """Whether ``fact`` is an old alarm or reading (billing or acquisition catching up after
        an outage, or a billing replay): the commands it causes are held until the meter's stream
        settles, so a raised-and-cleared pair from the past never trips and restores a meter."""
        if self.stale_after_s is None or not isinstance(fact, AlarmRaised | AlarmCleared | ReadingRecorded):
            return False
        now = self.clock()
        if fact.time.timestamp() >= now - self.stale_after_s:
            return False
        self.settling[key] = now + self.settle_s
        return True

    def _parameters(self, fact: Event) -> list[Event]:
        """Parameter downloads (C8) to meters that keep prices and limits; tracked like any
        command. Ids derive from the fact and the meter, so a replay repeats them harmlessly."""
        book = self.parameter_books.get(fact.project_id) or parameters.ParameterBook(fact.project_id)
        if isinstance(fact, MeterRegistered):  # its model may arrive after its account: catch up
            self.models[(fact.project_id, fact.meter_id)] = fact.model
            owners = [a for a in book.accounts.values() if fact.meter_id in a.meter_ids]
            now = max(fact.time, book.clock)
            found = [parameters.download(book, a.account_id, fact.meter_id, fact, now) for a in owners]
            candidates = [c for c in found if c is not None]
        elif isinstance(
            fact,
            TariffPublished | AccountOpened | AccountTariffChanged | AlarmThresholdsSet | CommandRequested,
        ):
            candidates = parameters.decide(book, fact, fact.time)
        else:
            return []
        return self._download(parameters.apply(book, fact), candidates)

    def _parameters_due(self, now: datetime) -> list[Event]:
        """Downloads of prices whose effective time has come (recorded ahead of it)."""
        out: list[Event] = []
        for book in list(self.parameter_books.values()):
            if book.next_edge is not None and book.next_edge <= now:
                out += self._download(*parameters.due(book, now))
        return out

    def _download(self, book: parameters.ParameterBook, candidates: list[CommandRequested]) -> list[Event]:
        wanted = [
            c
            for c in candidates
            if self._keeps_parameters(c.project_id, c.meter_id)
            and (self.owns is None or self.owns(c.meter_id))
        ]
        for command in wanted:
            book = parameters.apply(book, command)
            self._lifecycle(self._meter(command.project_id, command.meter_id), command)
        self.parameter_books[book.project_id] = book
        return list(wanted)

    def _keeps_parameters(self, project_id: str, meter_id: str) -> bool:
        return self.models.get((project_id, meter_id), "").upper().startswith(self.parameter_models)

    def _meter(self, project_id: str, meter_id: str) -> Meter:
        key = (project_id, meter_id)
        if key not in self.meters:
            self.meters[key] = Meter(
                MeterPolicy(project_id, meter_id), MeterCommands(project_id, meter_id, self.retry)
            )
        return self.meters[key]

    def _on_meter(self, meter: Meter, fact: Event, hold: bool) -> list[Event]:
        if isinstance(fact, LIFECYCLE):
            self._lifecycle(meter, fact)
        if not isinstance(fact, POLICY):
            return []  # the policy has no opinion on how a command went
        now = max(meter.clock, fact.time)
        if hold:
            commands = policy.decide(meter.policy, fact, now)
            meter.policy = policy.apply(meter.policy, fact)
            key = (meter.policy.project_id, meter.policy.meter_id)
            for command in commands:
                self.held.setdefault(key, {})[lifecycle.channel_of(command)] = command
            commands = []
        else:
            meter.policy, commands = policy.step(meter.policy, fact, now)
        meter.clock = now
        for command in commands:
            self._lifecycle(meter, command)
        meter.wake = policy.next_wake(meter.policy, now)
        return list(commands)

    def _lifecycle(self, meter: Meter, fact: Event) -> None:
        meter.commands = lifecycle.apply(meter.commands, fact)
        if isinstance(fact, CommandRequested):
            self.index.setdefault(fact.command_id, (fact.project_id, fact.meter_id))
            self.active.add((fact.project_id, fact.meter_id))
        if meter.commands.unreported:
            self.touched.add((meter.commands.project_id, meter.commands.meter_id))

    def _abandoned(self, hold: bool = False, keys: Sequence[MeterKey] | None = None) -> list[Event]:
        """``CommandAbandoned`` for the commands the last facts ended unacknowledged (of the meters
        ``keys``, else those just touched), applied. None while ``hold``: a replayed log may hold
        them further on; the replay's end sends those it lacks (:meth:`_settle`)."""
        touched, self.touched = self.touched, set()
        out: list[Event] = []
        for key in touched if keys is None else keys:
            meter = self.meters[key]
            for fact in [] if hold else lifecycle.abandonments(meter.commands):
                meter.commands = lifecycle.apply(meter.commands, fact)
                out.append(fact)
        return out

    def _translate(self, fact: Event) -> Event:
        """Sender facts of an attempt → facts of its command; failures re-judged by reason."""
        if not isinstance(fact, CommandSent | CommandAcknowledged | CommandFailed):
            return fact
        update: dict[str, object] = {}
        attempt = self.attempts.get(fact.command_id)
        if attempt is not None:
            update["command_id"] = attempt[0]
            if isinstance(fact, CommandSent | CommandFailed):
                update["attempt"] = attempt[1]
        if isinstance(fact, CommandFailed) and not fact.will_retry:
            update["will_retry"] = fact.reason.startswith(RETRIABLE)
        return fact.model_copy(update=update) if update else fact

    def _note_attempt(self, request: CommandRequested) -> None:
        attempt = int(request.params.get("attempt", "2"))
        self.attempts.setdefault(request.command_id, (request.params["retry_of"], attempt))

    def _batch(self, request: BatchRequested) -> list[Event]:
        if request.batch_id in self.batches:
            return []
        self.batches[request.batch_id] = request
        if self.owns is not None:  # each partition expands its own meters of the batch
            mine = tuple(m for m in request.meter_ids if self.owns(m))
            if not mine:
                return []
            request = request.model_copy(update={"meter_ids": mine})
        expanded = batches.expand(request, self._batch_downloads(request))
        out = list(expanded)
        for fact in expanded:
            out += self.fold(fact)
        return out

    def _batch_downloads(self, request: BatchRequested) -> dict[str, dict[str, str]]:
        """Issue prices (C5): the parameter download (C8) each meter of the batch would get now,
        even when it was sent the same set before. Meters that keep no parameters get none."""
        if request.operation is not batches.Operation.ISSUE_PRICES:
            return {}
        book = self.parameter_books.get(request.project_id) or parameters.ParameterBook(request.project_id)
        now = max(request.time, book.clock)
        owner: dict[str, str] = {}  # meter → the first account listing it
        for account in book.accounts.values():
            for m in account.meter_ids:
                owner.setdefault(m, account.account_id)
        out: dict[str, dict[str, str]] = {}
        for meter_id in request.meter_ids:
            if not self._keeps_parameters(request.project_id, meter_id) or meter_id not in owner:
                continue
            command = parameters.download(book, owner[meter_id], meter_id, request, now, force=True)
            if command is not None:
                out[meter_id] = command.params
        return out

    # --- replay -------------------------------------------------------------------------------
    @property
    def replaying(self) -> bool:
        """Whether the log is being read again after a restore (commands are held)."""
        return self.catchup.replaying

    def _settle(self, now: float) -> list[Event]:
        """End the replay once it is applied (or quiet), sending the held commands still wanted."""
        if not self.catchup.finished():
            return []
        self.settling = {}
        out = self._release(datetime.fromtimestamp(now, UTC), list(self.held))
        log.info("control: replay applied; %d held commands sent", len(out))
        out += self._abandoned(keys=list(self.meters))  # the ends the log lacks (or predates)
        return out

    def _release(self, now: datetime, keys: Sequence[MeterKey]) -> list[Event]:
        """Send the held commands of ``keys`` that the meters' state still wants."""
        out: list[Event] = []
        for key in keys:
            by_channel = self.held.pop(key, {})
            meter = self.meters[key]
            for command in by_channel.values():
                if not _still_wanted(meter, command, now):
                    continue
                command = command.model_copy(update={"time": now})
                meter.policy = policy.apply(meter.policy, command)
                self._lifecycle(meter, command)
                out.append(command)
        return out

    # --- the clock --------------------------------------------------------------------------
    def due(self, now: datetime) -> list[Event]:
        """Everything the clock causes at ``now``, applied to the state."""
        out: list[Event] = []
        for meter in self.meters.values():
            wakes = 0
            while meter.wake is not None and meter.wake <= now and wakes < MAX_WAKES_PER_TICK:
                wake, wakes = meter.wake, wakes + 1
                meter.policy, commands = policy.step(meter.policy, None, wake)
                meter.clock = max(meter.clock, wake)
                for command in commands:
                    self._lifecycle(meter, command)
                out += commands
                meter.wake = policy.next_wake(meter.policy, wake)
        for key in list(self.active):
            meter = self.meters[key]
            for fact in lifecycle.decide(meter.commands, now):
                if isinstance(fact, CommandTimedOut):
                    self._lifecycle(meter, fact)
                out.append(fact)
            for view in lifecycle.due(meter.commands, now):
                if view.attempt >= 1:  # attempt 1 is the request itself
                    out += self._retry(view, now)
            if all(v.status in ENDED for v in meter.commands.commands.values()):
                self.active.discard(key)
        out += self._abandoned()
        if now - self.compacted_at >= COMPACT_EVERY:
            self.compact()
            self.compacted_at = now
        return out

    def compact(self) -> None:
        """Forget the ids of commands the meters' lifecycles dropped (``lifecycle.KEEP_ENDED``)."""
        self.index = {
            cid: key
            for cid, key in self.index.items()
            if key in self.meters and cid in self.meters[key].commands.commands
        }
        self.attempts = {cid: a for cid, a in self.attempts.items() if a[0] in self.index}

    def _retry(self, view: CommandView, now: datetime) -> list[Event]:
        request, attempt = view.request, view.attempt + 1
        cid = retry_id(request.project_id, request.command_id, attempt)
        if cid in self.attempts:
            return []  # already asked for; waiting for the sender
        retry = request.model_copy(
            update={
                "event_id": cid,
                "command_id": cid,
                "time": now,
                "causation_id": request.event_id,
                "correlation_id": request.correlation_id or request.event_id,
                "params": {**request.params, "retry_of": request.command_id, "attempt": str(attempt)},
                "expires_at": view.deadline,
            }
        )
        self._note_attempt(retry)
        return [retry]

    # --- queries ----------------------------------------------------------------------------
    def command(self, command_id: str) -> CommandView | None:
        """A command's view (its attempts' ids resolve to it)."""
        command_id = self.attempts.get(command_id, (command_id, 0))[0]
        key = self.index.get(command_id)
        meter = self.meters.get(key) if key is not None else None
        return meter.commands.commands.get(command_id) if meter is not None else None


def _still_wanted(meter: Meter, command: CommandRequested, now: datetime) -> bool:
    """Whether a command held in a replay must still go out, given the replayed state."""
    if command.command_id in meter.commands.commands:
        return False  # the log has it: it was sent before the restart
    if command.action in policy.ACTION_SUPPLY:
        supply = policy.ACTION_SUPPLY[command.action]
        return policy.desired(meter.policy, now).supply is supply and meter.policy.commanded is not supply
    if command.action in (Action.KEEP_POWER_ON, Action.KEEP_POWER_OFF):
        return (meter.policy.keep_power is not None) == (command.action is Action.KEEP_POWER_ON)
    return True


def _with_policy(commands: MeterCommands, retry: RetryPolicy) -> MeterCommands:
    return replace(commands, policy=retry) if commands.policy != retry else commands


def retry_policy(
    max_attempts: int,
    backoff_s: float,
    factor: float,
    max_backoff_s: float,
    attempt_timeout_s: float,
    command_timeout_s: float,
) -> RetryPolicy:
    """The lifecycle's retry policy from settings."""
    return RetryPolicy(max_attempts, backoff_s, factor, max_backoff_s, attempt_timeout_s, command_timeout_s)
