"""The queryable send log: one row per notification, folded from the mf.notifications facts
(deferrals included), newest last, bounded in size.

A row never leaves a final state (delivered, failed, suppressed) for an earlier one, so reading
the topic again after a restart, or a late read-back of an older attempt or deferral, cannot
regress it (``libs.events.notify.send_step``, the rule the API's send log folds by too).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from libs.events.base import Event
from libs.events.notify import (
    SEND_FINAL,
    NotificationDeferred,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    SendOutcome,
    send_step,
)

FINAL = SEND_FINAL
STATUSES = frozenset({"requested", "deferred", "retrying", *FINAL})


@dataclass
class SendRecord:
    notification_id: str
    project_id: str
    account_id: str  # unique within its project only
    channel: str
    recipient: str
    template: str
    requested_at: datetime
    status: str = "requested"
    attempts: int = 0
    updated_at: datetime | None = None
    provider: str = ""
    provider_message_id: str = ""
    detail: str = ""


class SendLog:
    """Rows by notification id; the oldest rows go once ``capacity`` is exceeded."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self.rows: OrderedDict[str, SendRecord] = OrderedDict()

    def apply(self, event: Event) -> None:
        """Fold one fact of mf.notifications (other types are ignored)."""
        if isinstance(event, NotificationRequested):
            if event.notification_id not in self.rows:
                self.rows[event.notification_id] = SendRecord(
                    event.notification_id,
                    event.project_id,
                    event.account_id or "",
                    str(event.channel),
                    event.recipient,
                    event.template,
                    event.time,
                    updated_at=event.time,
                )
                while len(self.rows) > self.capacity:
                    self.rows.popitem(last=False)
            return
        if not isinstance(event, SendOutcome):
            return
        row = self.rows.get(event.notification_id)
        step = None if row is None else send_step(row.status, row.attempts, event)
        if row is None or step is None:
            return
        (row.status, row.attempts), row.updated_at = step, event.time
        if isinstance(event, NotificationDelivered):
            row.provider, row.provider_message_id, row.detail = event.provider, event.provider_message_id, ""
        elif isinstance(event, NotificationFailed):
            row.provider, row.detail = event.provider, event.reason
        elif isinstance(event, NotificationDeferred):
            row.detail = event.detail  # "quiet_hours until 2026-11-22T07:00:00+08:00"
        else:
            row.detail = event.reason

    def query(
        self,
        account_id: str | None = None,
        recipient: str | None = None,
        status: str | None = None,
        limit: int = 100,
        project_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` rows matching every filter given, newest first (an account id
        alone matches that id in every project)."""
        out: list[dict[str, Any]] = []
        for row in reversed(self.rows.values()):
            if project_id is not None and row.project_id != project_id:
                continue
            if account_id is not None and row.account_id != account_id:
                continue
            if recipient is not None and row.recipient != recipient:
                continue
            if status is not None and row.status != status:
                continue
            out.append(asdict(row))
            if len(out) >= limit:
                break
        return out

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        counts = dict.fromkeys(sorted(STATUSES), 0)
        for row in self.rows.values():
            counts[row.status] += 1
        return counts
