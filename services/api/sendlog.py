"""The send log as the API shows it (D1, D3): one row per notification, folded from the facts of
``mf.notifications`` — a request, then its attempts' outcomes — as a pure fold with no Kafka in it
(the read model feeds it, :mod:`services.api.readmodel`).

``status`` is what happened last: ``requested`` (not sent yet: waiting to be sent), ``deferred``
(held back by quiet hours or a rate limit until ``deferred_until``), ``retrying`` (an attempt
failed, notify tries again), or a final one: ``delivered`` (the provider accepted it), ``failed``
(notify gave up; the request went to ``mf.dead-letter``), ``suppressed`` (the same notice already
reached the recipient). A row never leaves a final state, and a failed attempt or a deferral
older than the attempts already seen changes nothing: ``libs.events.notify.send_step``, the rule
notify's own send log folds by too.

Memory is bounded per project: the newest ``kept`` requests of each project stay (by arrival),
older ones go; the whole history stays on the log and in ClickHouse (``v_notifications``). Rows
are keyed by ``(project, notification id)`` and indexed by ``(project, account id)``, so one
project's ids never answer for another's and an account's rows are found without a scan.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Reversible
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from libs.events import notify as nfy
from libs.events.base import Event

SENDS_KEPT = 10_000
"""Default of ``MF_API_SENDS_KEPT``: the notifications kept per project (about 0.9 KB each)."""


class SendStatus(StrEnum):
    """What happened to a notification last."""

    REQUESTED = "requested"
    DEFERRED = "deferred"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


FINAL = frozenset(SendStatus(s) for s in nfy.SEND_FINAL)
FACTS = (
    nfy.NotificationRequested,
    nfy.NotificationDeferred,
    nfy.NotificationDelivered,
    nfy.NotificationFailed,
    nfy.NotificationSuppressed,
)


@dataclass(slots=True)
class Send:
    project_id: str
    notification_id: str
    account_id: str  # "" when the request named none; unique within its project only
    channel: str
    recipient: str
    template: str
    requested_at: datetime
    updated_at: datetime
    status: SendStatus = SendStatus.REQUESTED
    attempts: int = 0
    provider: str = ""
    provider_message_id: str = ""
    last_error: str = ""  # the latest failed attempt's reason (kept if a later attempt delivered)
    suppressed_reason: str = ""
    # the latest deferral (kept after a later attempt, like last_error): why and until when
    deferred_reason: nfy.DeferReason | None = None
    deferred_until: datetime | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class SendFilter:
    """What a query keeps: every field given must match (``since`` inclusive, ``until`` exclusive,
    both on ``requested_at``)."""

    account_id: str | None = None
    recipient: str | None = None
    status: SendStatus | None = None
    channel: str | None = None
    template: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, s: Send) -> bool:
        return (
            self.account_id in (None, s.account_id)
            and self.recipient in (None, s.recipient)
            and self.status in (None, s.status)
            and self.channel in (None, s.channel)
            and self.template in (None, s.template)
            and (self.since is None or s.requested_at >= self.since)
            and (self.until is None or s.requested_at < self.until)
        )


class SendLog:
    """The newest ``kept`` notifications of each project, folded from the facts."""

    def __init__(self, kept: int = SENDS_KEPT) -> None:
        self.kept = kept
        self.by_project: dict[str, OrderedDict[str, Send]] = {}  # in arrival order
        self.by_account: dict[tuple[str, str], dict[str, Send]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.by_project.values())

    def get(self, project_id: str, notification_id: str) -> Send | None:
        rows = self.by_project.get(project_id)
        return rows.get(notification_id) if rows is not None else None

    def apply(self, e: Event) -> None:
        """Fold one fact (idempotent; an outcome whose request is not, or no longer, kept is
        ignored: on the log a request precedes its outcomes, which share its key)."""
        if isinstance(e, nfy.NotificationRequested):
            self._requested(e)
            return
        if not isinstance(e, nfy.SendOutcome):
            return
        row = self.get(e.project_id, e.notification_id)
        step = None if row is None else nfy.send_step(row.status, row.attempts, e)
        if row is None or step is None:
            return
        row.status, row.attempts, row.updated_at = SendStatus(step[0]), step[1], e.time
        if isinstance(e, nfy.NotificationDelivered):
            row.provider, row.provider_message_id = sys.intern(e.provider), e.provider_message_id
        elif isinstance(e, nfy.NotificationFailed):
            row.provider, row.last_error = sys.intern(e.provider), e.reason
        elif isinstance(e, nfy.NotificationDeferred):
            row.deferred_reason, row.deferred_until = e.reason, e.until
        else:
            row.suppressed_reason = e.reason

    def _requested(self, e: nfy.NotificationRequested) -> None:
        rows = self.by_project.setdefault(e.project_id, OrderedDict())
        if e.notification_id in rows or self.kept <= 0:
            return
        # channel, template and provider repeat on every row: one string each, not one per row
        row = Send(
            e.project_id, e.notification_id, e.account_id or "", sys.intern(str(e.channel)), e.recipient,
            sys.intern(e.template), e.time, e.time,
        )  # fmt: skip
        rows[e.notification_id] = row
        self.by_account.setdefault((e.project_id, row.account_id), {})[e.notification_id] = row
        while len(rows) > self.kept:
            _, old = rows.popitem(last=False)
            self._unindex(old)
            self.evicted += 1

    def _unindex(self, row: Send) -> None:
        key = (row.project_id, row.account_id)
        same = self.by_account.get(key)
        if same is not None:
            same.pop(row.notification_id, None)
            if not same:
                del self.by_account[key]

    def query(
        self, project_ids: Iterable[str], wanted: SendFilter, owns: Callable[[str | None], bool]
    ) -> list[Send]:
        """The rows of ``project_ids`` that match ``wanted`` and whose account ``owns`` admits,
        newest request first (ties: the later arrival first)."""
        out: list[Send] = []
        for project_id in project_ids:
            if wanted.account_id is not None:
                rows: Reversible[Send] = self.by_account.get((project_id, wanted.account_id), {}).values()
            else:
                rows = self.by_project.get(project_id, {}).values()
            out += (s for s in reversed(rows) if wanted(s) and owns(s.account_id or None))
        # each project's rows arrive roughly in time order: the sort mostly merges runs
        out.sort(key=lambda s: s.requested_at, reverse=True)
        return out
