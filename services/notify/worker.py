"""The deciding half of the notify service: which facts call for which notifications.

A stream processor (:mod:`libs.stack.processor`) in global mode folds account-keyed facts
(``AccountOpened``, ``BalanceChanged``, ``SubscriptionSet``, account alarms) with meter-keyed
ones (meter alarms, relay / valve commands) into one :class:`Directory` of who hears what, and
emits ``NotificationRequested`` facts. The handler never does I/O: sending is the
:mod:`services.notify.sender` loop's job. Account, meter and command ids are unique only within
a project, so everything the directory holds is keyed by ``(project_id, id)``.

Alarms are told when raised and when cleared; the balance alarms one balance change clears
(arrears, levels 1 and 2) are told once, by the first of them, and not at all when a recharge
cleared them (``AlarmCleared.details["cause"] == "recharge"``): the recharge's own
``recharge_arrived`` message carries the new balance, and a third message beside it and "power
restored" would only spend the recipient's rate limit ahead of the restore. An account that
unsubscribed from ``recharge_arrived`` is told the clearing. Other causes (allowance, adjustment,
thresholds …) are told, and so are clearings that name no cause (billing's older facts).

A restore (close, valve open) that fails is told once control gives up on it, which control
publishes as ``CommandAbandoned`` (outcome failed or timed out; superseded tells nothing: a newer
command on the switch follows). The decider does not judge failures itself: whether one is retried
is control's rule. A log written before control published abandonments tells no restore failure
(its failures and ``command_timeout`` alarms are not judged); control backfills the abandonments
of its retained history when it first starts with them, stamped with their old time, so a recent
one is still told and an old one is stale.

Request ids come from :func:`services.notify.delivery.plan` (project, account, channel, template
and the occurrence: alarm id, recharge event id, command id), so a redelivered or replayed fact
yields the same id, and the state remembers the ids it emitted and emits each once. Facts older
than ``max_age_s`` when they are folded (a replay of an old log, a new deployment) update the
directory but notify nobody. A fact about an account or meter not known yet waits (in order)
until its ``AccountOpened`` arrives: topics interleave differently on a replay.

The snapshot carries :data:`SNAPSHOT_VERSION`; one of another version is rejected and the
directory rebuilt from the log (a re-emitted request keeps its id, and the sender finished it).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import time as wall_time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.events.base import Event
from libs.events.billing import AccountOpened, AlarmCleared, AlarmKind, AlarmRaised, BalanceChanged
from libs.events.codec import Codec
from libs.events.control import (
    Action,
    CommandAbandoned,
    CommandAcknowledged,
    CommandFailed,
    CommandRequested,
)
from libs.events.notify import NotificationRequested, SubscriptionSet
from libs.events.topics import ALARMS, BILLING, COMMANDS, LEDGER, NOTIFICATIONS
from libs.stack.deadletter import Rejected, reject
from libs.stack.processor import Inbound, Outbound
from libs.stack.snapshot import Blob, ChunkedPickle, load_chunked
from services.notify.delivery import AccountSettings, QuietHours, plan
from services.notify.templates import Template, notice_for

log = logging.getLogger(__name__)
INPUTS = (BILLING.name, LEDGER.name, ALARMS.name, COMMANDS.name, NOTIFICATIONS.name)
MAX_WAITING = 1_000  # facts per unknown account or meter; beyond it the oldest is dropped (logged)
MAX_REMEMBERED = 200_000  # emitted request ids kept for idempotency
SNAPSHOT_VERSION = 3  # bump when the directory's shape changes: older snapshots are rebuilt from the log
_TEMPLATE_NAMES = frozenset(t.value for t in Template)
_BALANCE_ALARMS = frozenset({AlarmKind.BALANCE_LEVEL1, AlarmKind.BALANCE_LEVEL2, AlarmKind.ARREARS})
Answer = AlarmRaised | AlarmCleared | BalanceChanged | CommandAcknowledged | CommandAbandoned
Key = tuple[str, str]  # (project id, id): account, meter and command ids are unique per project


@dataclass
class Directory:
    """Who each account is, how to reach them and what they want to hear."""

    accounts: dict[Key, AccountSettings] = field(default_factory=dict)
    meter_account: dict[Key, str] = field(default_factory=dict)  # meter → account id
    commands: dict[Key, Action] = field(default_factory=dict)  # command → action, until answered
    attempts: dict[Key, tuple[str, int]] = field(default_factory=dict)  # retry → (command id, n)
    balance_cleared: dict[Key, str] = field(default_factory=dict)  # account → last change told
    emitted: OrderedDict[str, None] = field(default_factory=OrderedDict)  # ids derive from the project
    waiting: dict[Key, list[Event]] = field(default_factory=dict)  # account or meter → its facts


def settings_from(current: AccountSettings, sub: SubscriptionSet) -> AccountSettings:
    """``current`` with the preferences of ``sub`` (an unknown time zone keeps the old one)."""
    quiet = None
    if sub.quiet_start_minute is not None and sub.quiet_end_minute is not None:
        tz = sub.timezone
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory: OSError
            log.warning(
                "notify: %s/%s: unknown time zone %r, using Asia/Shanghai", sub.project_id, sub.account_id, tz
            )
            tz = "Asia/Shanghai"
        start, end = divmod(sub.quiet_start_minute, 60), divmod(sub.quiet_end_minute, 60)
        quiet = QuietHours(wall_time(*start), wall_time(*end), tz)
    templates = None
    if sub.templates is not None:
        templates = frozenset(Template(t) for t in sub.templates if t in _TEMPLATE_NAMES)
    return replace(
        current,
        locale=sub.locale,
        channels=frozenset(sub.channels),
        templates=templates,
        quiet_hours=quiet,
    )


class NotifyState:
    """Handler and partition state of the notify processor."""

    def __init__(self, max_age_s: float = 86_400.0, clock: Callable[[], float] = time.time) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self.codec = Codec()
        self.stale = 0
        self.dropped = 0
        self.directory = Directory()
        self.rejected: list[Rejected] = []  # facts whose fold raised, drained by the processor
        self._record: Inbound | None = None  # the record being handled (for facts it releases)

    # -- PartitionState ------------------------------------------------------------------
    def restore(self, partition: int, blob: Blob | None) -> None:
        """Load the directory from a snapshot (or start empty: the log is replayed).

        Raises :class:`SnapshotRejected` for a snapshot of another version: the processor then
        replays the log (re-emitted requests keep their ids; the sender sends none twice)."""
        self.directory = Directory()
        if not blob:
            return
        _, directory, emitted = load_chunked(  # SnapshotRejected: the processor rebuilds from the log
            blob, lambda doc: isinstance(doc, tuple) and len(doc) == 3 and doc[0] == SNAPSHOT_VERSION
        )
        self.directory = replace(directory, emitted=OrderedDict.fromkeys(emitted))

    def snapshot(self, partition: int) -> ChunkedPickle:
        """The directory, pickled later in pieces from a copy taken now (its maps change in
        place; their values are immutable, the waiting lists are copied)."""
        d = self.directory
        copy = Directory(
            dict(d.accounts), dict(d.meter_account), dict(d.commands), dict(d.attempts),
            dict(d.balance_cleared), OrderedDict(), {k: list(v) for k, v in d.waiting.items()},
        )  # fmt: skip
        # The emitted ids as a list: the quickest copy of an OrderedDict (~20 ms on the loop for
        # MAX_REMEMBERED of them, a dict copy takes ~3 times that), and a list is written in pieces.
        return ChunkedPickle((SNAPSHOT_VERSION, copy, list(d.emitted)))

    def forget(self, partition: int) -> None:
        """Partitions moved away: drop the directory until they come back."""
        self.directory = Directory()

    # -- Handler -------------------------------------------------------------------------
    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Fold every event of the batch; the requests it calls for, encoded.

        A fact whose fold raises (or a waiting one an ``AccountOpened`` releases) is rejected,
        dead-lettered by the processor, and the rest go on. What it changed before raising stays:
        the directory's entries are replaced whole, so that is whole entries (a command noted, an
        account's settings), never half of one."""
        out: list[Event] = []
        for record in batch:
            self._record = record
            for fact in record.events:
                try:
                    out += self.fold(fact)
                except Exception as exc:
                    reject(self.rejected, record, fact, exc)
        return [Outbound(e.TOPIC, e.key, self.codec.encode(e)) for e in out]

    def settings_for(self, project_id: str, account_id: str) -> AccountSettings | None:
        """The account's current settings, or None while its ``AccountOpened`` is unknown."""
        return self.directory.accounts.get((project_id, account_id))

    def fold(self, fact: Event) -> list[NotificationRequested]:
        """Apply one fact; return the requests it causes (none for a repeat or a stale fact)."""
        d = self.directory
        project = fact.project_id
        if isinstance(fact, AccountOpened):
            return self._opened(fact)
        if isinstance(fact, SubscriptionSet):
            current = d.accounts.get((project, fact.account_id))
            if current is None:
                return self._wait(fact.account_id, fact)
            d.accounts[project, fact.account_id] = settings_from(current, fact)
            return []
        if isinstance(fact, CommandRequested):
            d.commands[project, fact.command_id] = fact.action
            if "retry_of" in fact.params:  # control's attempt n of a command
                n = fact.params.get("attempt", "")
                retry_of = fact.params["retry_of"]
                d.attempts[project, fact.command_id] = (retry_of, int(n) if n.isdigit() else 2)
            return []
        if isinstance(fact, CommandFailed):
            if d.attempts.pop((project, fact.command_id), None) is not None:
                d.commands.pop((project, fact.command_id), None)  # an attempt's own id is executed once
            return []  # control judges it: a final one arrives as CommandAbandoned
        if isinstance(fact, CommandAbandoned):
            return self._notify(fact.meter_id, fact)
        if isinstance(fact, AlarmRaised):
            return self._notify(fact.subject_id, fact)
        if isinstance(fact, AlarmCleared):
            return self._cleared(fact)
        if isinstance(fact, BalanceChanged):
            return self._notify(fact.account_id, fact) if fact.reason == "recharge" else []
        if isinstance(fact, CommandAcknowledged):
            attempt = d.attempts.pop((project, fact.command_id), None)
            if attempt is not None:
                d.commands.pop((project, attempt[0]), None)  # the command it carried is answered
            return self._notify(fact.meter_id, fact)
        return []

    def _cleared(self, fact: AlarmCleared) -> list[NotificationRequested]:
        """An alarm ended; of the balance alarms one balance change ends, the first is told, and
        none when a recharge ended them (its own message tells the balance)."""
        d = self.directory
        change = fact.causation_id
        account = self._account_of(fact.project_id, fact.subject_id)
        if (
            fact.kind not in _BALANCE_ALARMS
            or notice_for(fact) is None
            or account is None  # waits, and is judged when it returns
        ):
            return self._notify(fact.subject_id, fact)
        if fact.details.get("cause") == "recharge" and _hears_recharges(d.accounts[account]):
            return []
        if change is None:
            return self._notify(fact.subject_id, fact)
        if d.balance_cleared.get(account) == change:
            return []
        d.balance_cleared[account] = change
        return self._notify(fact.subject_id, fact)

    def _opened(self, fact: AccountOpened) -> list[NotificationRequested]:
        d, project = self.directory, fact.project_id
        current = d.accounts.get((project, fact.account_id))
        base = current or AccountSettings(account_id=fact.account_id, name=fact.holder)
        d.accounts[project, fact.account_id] = replace(
            base, name=fact.holder, phone=fact.phone, wechat_openid=fact.wechat_openid
        )
        for meter in fact.meter_ids:
            d.meter_account[project, meter] = fact.account_id
        out: list[NotificationRequested] = []
        for subject in [fact.account_id, *fact.meter_ids]:
            for held in d.waiting.pop((project, subject), []):
                try:
                    out += self.fold(held)
                except Exception as exc:  # popped: raised on, the rest of the queue would be lost
                    if self._record is None:
                        raise
                    reject(self.rejected, self._record, held, exc, waited=True)
        return out

    def _account_of(self, project: str, subject: str) -> Key | None:
        """The account a subject (an account or one of its meters) belongs to, once known."""
        d = self.directory
        if (project, subject) in d.accounts:
            return project, subject
        account = d.meter_account.get((project, subject))
        return None if account is None else (project, account)

    def _wait(self, subject: str, fact: Event) -> list[NotificationRequested]:
        key = (fact.project_id, subject)
        queue = self.directory.waiting.setdefault(key, [])
        queue.append(fact)
        if len(queue) > MAX_WAITING:
            queue.pop(0)
            self.dropped += 1
            log.warning("notify: more than %d facts wait for %s; dropped the oldest", MAX_WAITING, key)
        return []

    def _notify(self, subject: str, fact: Answer) -> list[NotificationRequested]:
        d = self.directory
        action = None
        if isinstance(fact, CommandAcknowledged):
            action = d.commands.get((fact.project_id, fact.command_id))
        notice = notice_for(fact, action=action)
        if notice is None or self.clock() - fact.time.timestamp() > self.max_age_s:
            if notice is not None:
                self.stale += 1
            self._answered(fact)
            return []
        account = self._account_of(fact.project_id, subject)
        if account is None:
            return self._wait(subject, fact)
        self._answered(fact)
        jobs, skipped = plan(notice, d.accounts[account])
        for why in skipped:
            log.info("notify: %s/%s", fact.project_id, why)  # why names the account
        out = []
        for job in jobs:
            nid = job.notification_id
            if nid in d.emitted:
                continue
            d.emitted[nid] = None
            if len(d.emitted) > MAX_REMEMBERED:
                d.emitted.popitem(last=False)
            update = {"causation_id": fact.event_id, "dedupe_ref": job.dedupe_ref}
            out.append(job.request.model_copy(update=update))
        return out

    def _answered(self, fact: Answer) -> None:
        """Forget a command once its outcome was told, or needed no telling."""
        commands, project = self.directory.commands, fact.project_id
        if isinstance(fact, CommandAcknowledged | CommandAbandoned):
            commands.pop((project, fact.command_id), None)


def _hears_recharges(settings: AccountSettings) -> bool:
    """Whether the account is told of recharges (channels and quiet hours are the same for all
    notices: the template subscription is what can differ)."""
    return settings.templates is None or Template.RECHARGE_ARRIVED in settings.templates
