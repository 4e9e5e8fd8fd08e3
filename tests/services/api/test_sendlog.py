"""The send log through the API (``GET /notifications``): notify's facts published to the real
broker, folded by the read model and read back — statuses, filters, pagination, tenancy with
colliding ids, permissions, bad query values; and the fold itself (final states stick, memory is
bounded per project)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from libs.events import Event
from libs.events.notify import (
    DeferReason,
    NotificationDeferred,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationSuppressed,
)
from services.api.sendlog import SendFilter, SendLog
from tests.services.api.conftest import T0, Harness, seed
from tests.services.api.test_auth import assert_problem

PHONE, OTHER_PHONE, OPENID = "+8613800138000", "+8613900139000", "oZhang3"
STATUSES = ["delivered", "failed", "requested", "suppressed", "retrying"]  # n1…n5 of history()


def request(project: str, nid: str, minute: int, account: str = "a0", **fields: Any) -> NotificationRequested:
    values: dict[str, Any] = {"channel": "sms", "recipient": PHONE, "template": "low_balance_1"} | fields
    return NotificationRequested(
        project_id=project, subject_id=values["recipient"], notification_id=nid, account_id=account,
        time=T0 + timedelta(minutes=minute), **values,
    )  # fmt: skip


def outcome(kind: type[Event], req: NotificationRequested, minute: int, **fields: Any) -> Event:
    return kind(
        project_id=req.project_id, subject_id=req.subject_id, notification_id=req.notification_id,
        channel=req.channel, causation_id=req.event_id, time=T0 + timedelta(minutes=minute), **fields,
    )  # fmt: skip


def history(project: str) -> list[Event]:
    """Five notifications of ``project``, one per status, plus one of account a1:

    n1 sms to a0, failed once then delivered · n2 wechat to a0, failed for good (dead-lettered) ·
    n3 sms to a0, still waiting · n4 sms to a0, a duplicate (suppressed) · n5 sms to a1, retrying."""
    n1 = request(project, "n1", 1)
    n2 = request(project, "n2", 2, channel="wechat", recipient=OPENID, template="arrears")
    n3 = request(project, "n3", 3, template="recharge_arrived")
    n4 = request(project, "n4", 4)
    n5 = request(project, "n5", 5, account="a1", recipient=OTHER_PHONE, template="power_cut")
    return [
        n1, n2, n3, n4, n5,
        outcome(NotificationFailed, n1, 6, provider="aliyun", reason="http:503", attempt=1, will_retry=True),
        outcome(NotificationDelivered, n1, 7, provider="aliyun", provider_message_id="ali-1", attempt=2),
        outcome(NotificationFailed, n2, 8, provider="wechat", reason="api:43004", attempt=1, will_retry=False),
        outcome(NotificationSuppressed, n4, 9, reason="duplicate: low_balance_1 sent at 08:01"),
        outcome(NotificationFailed, n5, 10, provider="aliyun", reason="timeout", attempt=1, will_retry=True),
    ]  # fmt: skip


async def folded(h: Harness, project: str) -> None:
    """Publish :func:`history` and wait until the read model's send log shows all of it."""
    await h.publish(*history(project))
    sends = h.app.state.api.readmodel.sends

    def done() -> bool | None:
        rows = [sends.get(project, f"n{i}") for i in range(1, 6)]
        return [s and s.status for s in rows] == STATUSES or None

    await h.until(done)


async def items(h: Harness, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await h.client.get("/notifications", headers=headers, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == len(body["items"])
    return list(body["items"])


async def test_the_send_log_shows_every_request_and_its_outcome(harness: Harness) -> None:
    h = harness
    project = f"ps-{uuid.uuid4().hex[:8]}"
    await folded(h, project)
    _, cashier = await h.user(("cashier",), (project,))

    rows = await items(h, cashier)
    assert [r["notification_id"] for r in rows] == ["n5", "n4", "n3", "n2", "n1"]  # newest request first
    by_id = {r["notification_id"]: r for r in rows}
    assert by_id["n1"] == {
        "project_id": project, "notification_id": "n1", "account_id": "a0", "channel": "sms", "recipient": PHONE,
        "template": "low_balance_1", "status": "delivered", "final": True, "attempts": 2, "provider": "aliyun",
        "provider_message_id": "ali-1", "last_error": "http:503", "suppressed_reason": None,
        "deferred_reason": None, "deferred_until": None, "requested_at": "2024-03-01T08:01:00Z", "updated_at": "2024-03-01T08:07:00Z",
    }  # fmt: skip
    assert {k: by_id["n2"][k] for k in ("status", "final", "attempts", "provider", "last_error", "channel")} == {
        "status": "failed", "final": True, "attempts": 1, "provider": "wechat", "last_error": "api:43004",
        "channel": "wechat",
    }  # fmt: skip
    assert by_id["n2"]["recipient"] == OPENID
    n3 = by_id["n3"]
    assert (n3["status"], n3["final"], n3["attempts"], n3["provider"]) == ("requested", False, 0, None)
    assert n3["updated_at"] == n3["requested_at"] == "2024-03-01T08:03:00Z"
    n4 = by_id["n4"]
    assert (n4["status"], n4["final"], n4["last_error"]) == ("suppressed", True, None)
    assert n4["suppressed_reason"] == "duplicate: low_balance_1 sent at 08:01"
    n5 = by_id["n5"]
    assert (n5["status"], n5["final"], n5["account_id"], n5["last_error"]) == (
        "retrying",
        False,
        "a1",
        "timeout",
    )

    # a late read-back of the first failure changes nothing: delivered stays delivered
    n1 = request(project, "n1", 1)
    late = outcome(NotificationFailed, n1, 11, provider="aliyun", reason="late", attempt=1, will_retry=False)
    marker = request(project, "n6", 12)
    await h.publish(late, n1, marker)  # and the request again: still one row
    await h.until(lambda: h.app.state.api.readmodel.sends.get(project, "n6"))
    again = {r["notification_id"]: r for r in await items(h, cashier)}
    assert again["n1"] == by_id["n1"] and len(again) == 6


async def test_a_deferred_message_shows_why_and_until_when(harness: Harness) -> None:
    h = harness
    project = f"pd-{uuid.uuid4().hex[:8]}"
    shanghai = timezone(timedelta(hours=8))
    seven = datetime(2024, 3, 2, 7, 0, tzinfo=shanghai)  # the end of the quiet hours, local time
    n1 = request(project, "n1", 1)  # deferred by quiet hours, still waiting
    n2 = request(project, "n2", 2, template="arrears")  # a retry held back by the rate limit
    n3 = request(project, "n3", 3, template="recharge_arrived")  # deferred, then delivered
    await h.publish(
        n1, n2, n3,
        outcome(NotificationDeferred, n1, 4, reason="quiet_hours", until=seven, attempt=0),
        outcome(NotificationFailed, n2, 5, provider="aliyun", reason="http:503", attempt=1, will_retry=True),
        outcome(NotificationDeferred, n2, 6, reason="rate_limited", until=T0 + timedelta(minutes=16), attempt=1),
        outcome(NotificationDeferred, n3, 7, reason="quiet_hours", until=seven, attempt=0),
        outcome(NotificationDelivered, n3, 8, provider="aliyun", provider_message_id="ali-3", attempt=1),
        outcome(NotificationDeferred, n3, 9, reason="quiet_hours", until=seven, attempt=0),  # read back late
    )  # fmt: skip
    await h.until(lambda: ((s := h.app.state.api.readmodel.sends.get(project, "n3")) and s.final) or None)
    _, viewer = await h.user(("viewer",), (project,))

    rows = await items(h, viewer, status="deferred")
    assert [r["notification_id"] for r in rows] == ["n2", "n1"]
    by_id = {r["notification_id"]: r for r in rows}
    n1_row = by_id["n1"]
    assert (n1_row["status"], n1_row["final"], n1_row["attempts"], n1_row["deferred_reason"]) == (
        "deferred", False, 0, "quiet_hours"
    )  # fmt: skip
    assert datetime.fromisoformat(n1_row["deferred_until"]) == seven == datetime(2024, 3, 1, 23, tzinfo=UTC)
    assert n1_row["updated_at"] == "2024-03-01T08:04:00Z"
    n2_row = by_id["n2"]
    assert (n2_row["attempts"], n2_row["last_error"], n2_row["deferred_reason"]) == (
        1,
        "http:503",
        "rate_limited",
    )
    assert datetime.fromisoformat(n2_row["deferred_until"]) == T0 + timedelta(minutes=16)
    [n3_row] = await items(h, viewer, template="recharge_arrived")
    assert (n3_row["status"], n3_row["final"], n3_row["attempts"], n3_row["provider_message_id"]) == (
        "delivered", True, 1, "ali-3"
    )  # fmt: skip
    assert n3_row["deferred_reason"] == "quiet_hours" and n3_row["updated_at"] == "2024-03-01T08:08:00Z"


FILTERS: list[tuple[dict[str, str], list[str]]] = [
    ({"account_id": "a0"}, ["n4", "n3", "n2", "n1"]),
    ({"account_id": "a1"}, ["n5"]),
    ({"account_id": "a9"}, []),
    ({"recipient": PHONE}, ["n4", "n3", "n1"]),
    ({"recipient": OPENID}, ["n2"]),
    ({"status": "requested"}, ["n3"]),
    ({"status": "retrying"}, ["n5"]),
    ({"status": "delivered"}, ["n1"]),
    ({"status": "failed"}, ["n2"]),
    ({"status": "suppressed"}, ["n4"]),
    ({"channel": "wechat"}, ["n2"]),
    ({"template": "low_balance_1"}, ["n4", "n1"]),
    ({"template": "low_balance_1", "status": "delivered", "account_id": "a0"}, ["n1"]),
    ({"since": "2024-03-01T08:02:00Z"}, ["n5", "n4", "n3", "n2"]),
    ({"until": "2024-03-01T08:02:00Z"}, ["n1"]),
    ({"since": "2024-03-01T16:02:00+08:00", "until": "2024-03-01T08:04:00Z"}, ["n3", "n2"]),
    ({"account_id": "a0", "since": "2024-03-01T08:03:00Z", "until": "2024-03-01T08:04:00Z"}, ["n3"]),
]


async def test_filters(harness: Harness) -> None:
    h = harness
    project = f"pf-{uuid.uuid4().hex[:8]}"
    await folded(h, project)
    _, viewer = await h.user(("viewer",), (project,))
    for params, expected in FILTERS:
        assert [r["notification_id"] for r in await items(h, viewer, **params)] == expected, params


async def test_pages_follow_next_links(harness: Harness) -> None:
    h = harness
    project = f"pg-{uuid.uuid4().hex[:8]}"
    await folded(h, project)
    _, operator = await h.user(("operator",), (project,))
    seen: list[str] = []
    url: str | None = "/notifications?limit=2"
    while url is not None:
        response = await h.client.get(url, headers=operator)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == 5 and page["limit"] == 2 and len(page["items"]) <= 2
        seen += [r["notification_id"] for r in page["items"]]
        url = page["next"]
    assert seen == ["n5", "n4", "n3", "n2", "n1"]
    last = await h.client.get("/notifications", headers=operator, params={"limit": 2, "offset": 4})
    assert [r["notification_id"] for r in last.json()["items"]] == ["n1"] and last.json()["next"] is None


async def test_another_projects_rows_stay_invisible_even_with_the_same_ids(harness: Harness) -> None:
    h = harness
    run = uuid.uuid4().hex[:8]
    a, b = f"psa-{run}", f"psb-{run}"
    await seed(h, a)
    await seed(h, b)  # a0 in both projects, and the same notification ids n1…n5 below
    await folded(h, a)
    theirs = request(b, "n1", 30, recipient=OTHER_PHONE, template="arrears")
    await h.publish(theirs, outcome(NotificationDelivered, theirs, 31, provider="aliyun", attempt=1))
    await h.until(
        lambda: ((s := h.app.state.api.readmodel.sends.get(b, "n1")) is not None and s.final) or None
    )
    _, mine = await h.user(("admin",), (a,))
    _, office = await h.user(("viewer",), (a, b))

    for params in ({}, {"account_id": "a0"}, {"recipient": OTHER_PHONE}, {"status": "delivered"}):
        rows = await items(h, mine, **params)
        assert rows and {r["project_id"] for r in rows} == {a}, params
    assert [r["template"] for r in await items(h, mine, account_id="a0", status="delivered")] == [
        "low_balance_1"
    ]
    assert_problem(await h.client.get("/notifications", headers=mine, params={"project_id": b}), 404)

    both = await items(h, office, account_id="a0", status="delivered")
    assert [(r["project_id"], r["notification_id"], r["template"]) for r in both] == [
        (b, "n1", "arrears"), (a, "n1", "low_balance_1"),
    ]  # fmt: skip
    only_b = await items(h, office, project_id=b)
    assert [(r["project_id"], r["recipient"], r["status"]) for r in only_b] == [(b, OTHER_PHONE, "delivered")]


async def test_roles_without_the_permission_get_403(harness: Harness) -> None:
    h = harness
    project = f"pr-{uuid.uuid4().hex[:8]}"
    await folded(h, project)
    for role in ("engineer", "consumer"):  # a consumer: not even its own account's
        _, headers = await h.user((role,), (project,), accounts=("a0",) if role == "consumer" else ())
        for params in ({}, {"account_id": "a0"}):
            problem = assert_problem(
                await h.client.get("/notifications", headers=headers, params=params), 403
            )
            assert problem["detail"] == "permission 'notifications:read' required"
    assert_problem(await h.client.get("/notifications"), 401)


BAD: list[tuple[dict[str, str], list[str] | None]] = [
    ({"status": "dead_lettered"}, ["query", "status"]),
    ({"status": "queued"}, ["query", "status"]),
    ({"channel": "fax"}, ["query", "channel"]),
    ({"since": "2024-03-01T08:00:00"}, ["query", "since"]),  # no timezone offset
    ({"until": "yesterday"}, ["query", "until"]),
    ({"limit": "0"}, ["query", "limit"]),
    ({"account_id": "a" * 65}, ["query", "account_id"]),
    ({"since": "2024-03-01T09:00:00Z", "until": "2024-03-01T09:00:00Z"}, None),
]


async def test_bad_query_values_are_a_422_problem(harness: Harness) -> None:
    h = harness
    _, viewer = await h.user(("viewer",), (f"pb-{uuid.uuid4().hex[:8]}",))
    for params, loc in BAD:
        problem = assert_problem(await h.client.get("/notifications", headers=viewer, params=params), 422)
        if loc is None:
            assert problem["detail"] == "until must be after since"
        else:
            errors = problem["errors"]
            assert isinstance(errors, list) and [e["loc"] for e in errors] == [loc], problem


# ---- the fold -------------------------------------------------------------------------------------


def everything(log: SendLog, project: str) -> list[str]:
    return [s.notification_id for s in log.query([project], SendFilter(), lambda _: True)]


def test_a_final_state_sticks_and_older_attempts_change_nothing() -> None:
    log = SendLog()
    n1 = request("p", "n1", 0)
    events = [
        n1,
        outcome(NotificationFailed, n1, 1, provider="aliyun", reason="e1", attempt=1, will_retry=True),
        outcome(NotificationFailed, n1, 3, provider="aliyun", reason="e2", attempt=2, will_retry=True),
        outcome(
            NotificationFailed, n1, 2, provider="aliyun", reason="e1", attempt=1, will_retry=True
        ),  # late
    ]
    for e in events:
        log.apply(e)
    row = log.get("p", "n1")
    assert row is not None
    assert (row.status, row.attempts, row.last_error, row.updated_at) == (
        "retrying",
        2,
        "e2",
        T0 + timedelta(minutes=3),
    )
    log.apply(
        outcome(NotificationFailed, n1, 4, provider="tencent", reason="e3", attempt=3, will_retry=False)
    )
    for late in (
        outcome(NotificationDelivered, n1, 5, provider="aliyun", provider_message_id="x", attempt=3),
        outcome(NotificationSuppressed, n1, 6, reason="duplicate"),
        n1,
    ):
        log.apply(late)
    assert (row.status, row.attempts, row.provider, row.last_error) == ("failed", 3, "tencent", "e3")
    assert row.updated_at == T0 + timedelta(minutes=4) and row.final
    # an outcome whose request is unknown (or already evicted) makes no row
    log.apply(outcome(NotificationDelivered, request("p", "n9", 0), 1, provider="aliyun", attempt=1))
    assert log.get("p", "n9") is None and len(log) == 1


def test_a_deferral_older_than_the_attempts_seen_changes_nothing() -> None:
    log = SendLog()
    n1 = request("p", "n1", 0)
    later = T0 + timedelta(hours=1)
    for e in (
        n1,
        outcome(NotificationDeferred, n1, 1, reason="rate_limited", until=later, attempt=0),
        outcome(NotificationFailed, n1, 2, provider="aliyun", reason="e1", attempt=1, will_retry=True),
        outcome(NotificationDeferred, n1, 3, reason="quiet_hours", until=later, attempt=0),  # read back late
    ):
        log.apply(e)
    row = log.get("p", "n1")
    assert row is not None
    assert (row.status, row.attempts, row.deferred_reason, row.updated_at) == (
        "retrying", 1, DeferReason.RATE_LIMITED, T0 + timedelta(minutes=2)
    )  # fmt: skip
    log.apply(outcome(NotificationDeferred, n1, 4, reason="quiet_hours", until=later, attempt=1))
    assert (row.status, row.attempts, row.deferred_reason, row.deferred_until) == (
        "deferred", 1, DeferReason.QUIET_HOURS, later
    )  # fmt: skip


def test_each_project_keeps_its_newest_requests_and_the_account_index_follows() -> None:
    log = SendLog(kept=3)
    for i in range(5):
        log.apply(request("p", f"n{i}", i, account=f"a{i % 2}"))
    log.apply(request("q", "n0", 0))
    assert everything(log, "p") == ["n4", "n3", "n2"] and everything(log, "q") == ["n0"]
    assert log.evicted == 2 and len(log) == 4
    a0 = log.query(["p"], SendFilter(account_id="a0"), lambda _: True)
    assert [s.notification_id for s in a0] == ["n4", "n2"]
    assert set(log.by_account) == {("p", "a0"), ("p", "a1"), ("q", "a0")}
    for i in range(5, 8):
        log.apply(request("p", f"n{i}", i, account="a2"))
    assert set(log.by_account) == {("p", "a2"), ("q", "a0")}  # emptied entries go too
    assert SendLog(kept=0).query(["p"], SendFilter(), lambda _: True) == []


def test_owns_hides_other_accounts_rows() -> None:
    log = SendLog()
    log.apply(request("p", "n1", 0, account="a0"))
    log.apply(request("p", "n2", 1, account="a1"))
    log.apply(request("p", "n3", 2, account=None))
    mine = log.query(["p"], SendFilter(), lambda account: account == "a1")
    assert [s.notification_id for s in mine] == ["n2"]
