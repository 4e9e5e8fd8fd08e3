"""The deciding half of the notify service: which facts call for which notifications.

A stream processor (:mod:`libs.stack.processor`) in global mode folds account-keyed facts
(``AccountOpened``, ``BalanceChanged``, ``SubscriptionSet``, account alarms) with meter-keyed
ones (meter alarms, relay / valve commands) into one :class:`Directory` of who hears what, and
emits ``NotificationRequested`` facts. The handler never does I/O: sending is the
:mod:`services.notify.sender` loop's job.

Alarms are told when raised and when cleared; the balance alarms one balance change clears
(arrears, levels 1 and 2) are told once, by the first of them. A restore (close, valve open)
that fails is told once control gives up on it: control retries failures whose reason is in
:data:`RETRIED_REASONS` until its last attempt (``MF_CONTROL_MAX_ATTEMPTS``, also read here),
so the decider judges a failure the same way, after mapping a retry's id back to its command;
a command that ends timed out arrives as control's ``command_timeout`` alarm.

Request ids come from :func:`services.notify.delivery.plan` (project, account, channel, template
and the occurrence: alarm id, recharge event id, command id), so a redelivered or replayed fact
yields the same id, and the state remembers the ids it emitted and emits each once. Facts older
than ``max_age_s`` when they are folded (a replay of an old log, a new deployment) update the
directory but notify nobody. A fact about an account or meter not known yet waits (in order)
until its ``AccountOpened`` arrives: topics interleave differently on a replay.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import time as wall_time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.events.base import Event
from libs.events.billing import AccountOpened, AlarmCleared, AlarmKind, AlarmRaised, BalanceChanged
from libs.events.codec import Codec
from libs.events.control import Action, CommandAcknowledged, CommandFailed, CommandRequested
from libs.events.notify import NotificationRequested, SubscriptionSet
from libs.events.topics import ALARMS, BILLING, COMMANDS, NOTIFICATIONS
from libs.stack.processor import Inbound, Outbound
from services.notify.delivery import AccountSettings, QuietHours, plan
from services.notify.templates import Template, notice_for

log = logging.getLogger(__name__)
INPUTS = (BILLING.name, ALARMS.name, COMMANDS.name, NOTIFICATIONS.name)
MAX_WAITING = 1_000  # facts per unknown account or meter; beyond it the oldest is dropped (logged)
MAX_REMEMBERED = 200_000  # emitted request ids kept for idempotency
_TEMPLATE_NAMES = frozenset(t.value for t in Template)
_BALANCE_ALARMS = frozenset({AlarmKind.BALANCE_LEVEL1, AlarmKind.BALANCE_LEVEL2, AlarmKind.ARREARS})
RETRIED_REASONS = ("no_reply", "bad_reply", "transport", "not_confirmed")
"""Failure reasons control retries until its last attempt (``RETRIABLE`` of
services/control/worker.py; a test holds the two equal); any other failure ends a command."""
Answer = AlarmRaised | AlarmCleared | BalanceChanged | CommandAcknowledged | CommandFailed


@dataclass
class Directory:
    """Who each account is, how to reach them and what they want to hear."""

    accounts: dict[str, AccountSettings] = field(default_factory=dict)
    meter_account: dict[str, str] = field(default_factory=dict)
    commands: dict[str, Action] = field(default_factory=dict)  # command id → action, until answered
    attempts: dict[str, tuple[str, int]] = field(default_factory=dict)  # retry id → (command id, n)
    balance_cleared: dict[str, str] = field(default_factory=dict)  # account → last change told
    emitted: OrderedDict[str, None] = field(default_factory=OrderedDict)
    waiting: dict[str, list[Event]] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a snapshot taken before a field existed lacks it: that field starts empty
        self.__dict__.update(Directory().__dict__ | state)


def settings_from(current: AccountSettings, sub: SubscriptionSet) -> AccountSettings:
    """``current`` with the preferences of ``sub`` (an unknown time zone keeps the old one)."""
    quiet = None
    if sub.quiet_start_minute is not None and sub.quiet_end_minute is not None:
        tz = sub.timezone
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory: OSError
            log.warning("notify: %s: unknown time zone %r, using Asia/Shanghai", sub.account_id, tz)
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

    def __init__(
        self,
        max_age_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
        command_attempts: int = 3,
    ) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self.command_attempts = command_attempts  # control's MF_CONTROL_MAX_ATTEMPTS
        self.codec = Codec()
        self.stale = 0
        self.dropped = 0
        self.directory = Directory()

    # -- PartitionState ------------------------------------------------------------------
    def restore(self, partition: int, blob: bytes | None) -> None:
        """Load the directory from a snapshot (or start empty: the log is replayed)."""
        self.directory = pickle.loads(blob) if blob else Directory()

    def snapshot(self, partition: int) -> bytes:
        """The directory as bytes."""
        return pickle.dumps(self.directory, protocol=pickle.HIGHEST_PROTOCOL)

    def forget(self, partition: int) -> None:
        """Partitions moved away: drop the directory until they come back."""
        self.directory = Directory()

    # -- Handler -------------------------------------------------------------------------
    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Fold every event of the batch; the requests it calls for, encoded."""
        out: list[Event] = []
        for record in batch:
            for fact in record.events:
                out += self.fold(fact)
        return [Outbound(e.TOPIC, e.key, self.codec.encode(e)) for e in out]

    def settings_for(self, account_id: str) -> AccountSettings | None:
        """The account's current settings, or None while its ``AccountOpened`` is unknown."""
        return self.directory.accounts.get(account_id)

    def fold(self, fact: Event) -> list[NotificationRequested]:
        """Apply one fact; return the requests it causes (none for a repeat or a stale fact)."""
        d = self.directory
        if isinstance(fact, AccountOpened):
            return self._opened(fact)
        if isinstance(fact, SubscriptionSet):
            current = d.accounts.get(fact.account_id)
            if current is None:
                return self._wait(fact.account_id, fact)
            d.accounts[fact.account_id] = settings_from(current, fact)
            return []
        if isinstance(fact, CommandRequested):
            d.commands[fact.command_id] = fact.action
            if "retry_of" in fact.params:  # control's attempt n of a command
                n = fact.params.get("attempt", "")
                d.attempts[fact.command_id] = (fact.params["retry_of"], int(n) if n.isdigit() else 2)
            return []
        if isinstance(fact, CommandFailed):
            return self._failed(fact)
        if isinstance(fact, AlarmRaised):
            return self._notify(fact.subject_id, fact)
        if isinstance(fact, AlarmCleared):
            return self._cleared(fact)
        if isinstance(fact, BalanceChanged):
            return self._notify(fact.account_id, fact) if fact.reason == "recharge" else []
        if isinstance(fact, CommandAcknowledged):
            attempt = d.attempts.pop(fact.command_id, None)
            if attempt is not None:
                d.commands.pop(attempt[0], None)  # the command this attempt carried is answered
            return self._notify(fact.meter_id, fact)
        return []

    def _failed(self, fact: CommandFailed) -> list[NotificationRequested]:
        """A failed attempt; once control will not try again, a failure of the command itself."""
        d = self.directory
        command_id, attempt = d.attempts.pop(fact.command_id, (fact.command_id, fact.attempt))
        action = d.commands.get(command_id) or d.commands.get(fact.command_id)
        if command_id != fact.command_id:
            d.commands.pop(fact.command_id, None)  # an attempt's own id is executed once
        retried = fact.will_retry or fact.reason.startswith(RETRIED_REASONS)
        if retried and attempt < self.command_attempts:
            return []
        ended = fact.model_copy(update={"command_id": command_id, "attempt": attempt})
        return self._notify(fact.meter_id, ended, action)

    def _cleared(self, fact: AlarmCleared) -> list[NotificationRequested]:
        """An alarm ended; of the balance alarms one balance change ends, the first is told."""
        d = self.directory
        cause = fact.causation_id
        if (
            fact.kind not in _BALANCE_ALARMS
            or cause is None
            or notice_for(fact) is None
            or self._account_of(fact.subject_id) is None  # waits, and is judged when it returns
        ):
            return self._notify(fact.subject_id, fact)
        if d.balance_cleared.get(fact.subject_id) == cause:
            return []
        d.balance_cleared[fact.subject_id] = cause
        return self._notify(fact.subject_id, fact)

    def _opened(self, fact: AccountOpened) -> list[NotificationRequested]:
        d = self.directory
        current = d.accounts.get(fact.account_id)
        base = current or AccountSettings(account_id=fact.account_id, name=fact.holder)
        d.accounts[fact.account_id] = replace(
            base, name=fact.holder, phone=fact.phone, wechat_openid=fact.wechat_openid
        )
        for meter in fact.meter_ids:
            d.meter_account[meter] = fact.account_id
        out: list[NotificationRequested] = []
        for key in [fact.account_id, *fact.meter_ids]:
            for held in d.waiting.pop(key, []):
                out += self.fold(held)
        return out

    def _account_of(self, subject: str) -> str | None:
        d = self.directory
        if subject in d.accounts:
            return subject
        return d.meter_account.get(subject)

    def _wait(self, key: str, fact: Event) -> list[NotificationRequested]:
        queue = self.directory.waiting.setdefault(key, [])
        queue.append(fact)
        if len(queue) > MAX_WAITING:
            queue.pop(0)
            self.dropped += 1
            log.warning("notify: more than %d facts wait for %s; dropped the oldest", MAX_WAITING, key)
        return []

    def _notify(
        self, subject: str, fact: Answer, action: Action | None = None
    ) -> list[NotificationRequested]:
        d = self.directory
        if isinstance(fact, CommandAcknowledged):
            action = d.commands.get(fact.command_id)
        notice = notice_for(fact, action=action)
        if notice is None or self.clock() - fact.time.timestamp() > self.max_age_s:
            if notice is not None:
                self.stale += 1
            self._answered(fact)
            return []
        account_id = self._account_of(subject)
        if account_id is None:
            return self._wait(subject, fact)
        self._answered(fact)
        jobs, skipped = plan(notice, d.accounts[account_id])
        for why in skipped:
            log.info("notify: %s", why)
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
        if isinstance(fact, CommandAcknowledged | CommandFailed):
            self.directory.commands.pop(fact.command_id, None)
        elif isinstance(fact, AlarmRaised) and fact.kind is AlarmKind.COMMAND_TIMEOUT:
            self.directory.commands.pop(fact.details.get("command_id", ""), None)
