"""An account's notification settings through the API: PUT lands as the ``SubscriptionSet`` fact
the notify service folds and GET reads it back; the defaults until set; tenancy; validation."""

from __future__ import annotations

import uuid
from datetime import time
from typing import Any

import pytest

from libs.events.notify import Channel, SubscriptionSet, Template
from services.api.schemas import NotificationSettingsIn
from services.notify.delivery import AccountSettings, QuietHours
from services.notify.worker import settings_from
from tests.services.api.conftest import Harness, seed
from tests.services.api.test_auth import assert_problem

PATH = "/accounts/a0/notifications"
DEFAULTS = {
    "channels": ["sms", "wechat"], "templates": None, "locale": "zh", "quiet_hours": None,
    "timezone": "Asia/Shanghai", "set_by": None, "updated_at": None,
}  # fmt: skip


async def test_put_then_get_round_trips_as_the_fact_notify_folds(harness: Harness) -> None:
    h = harness
    project = f"pn-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    username, op = await h.user(("operator",), (project,))
    _, cashier = await h.user(("cashier",), (project,))

    before = await h.client.get(PATH, headers=cashier)
    assert before.status_code == 200, before.text
    assert before.json() == {"project_id": project, "account_id": "a0", **DEFAULTS}

    body = {
        "channels": ["wechat", "wechat"], "templates": ["arrears", "power_restore_failed", "arrears"],
        "locale": "en", "quiet_hours": {"start": "22:30", "end": "07:00"}, "timezone": "Asia/Urumqi",
    }  # fmt: skip
    put = await h.client.put(PATH, headers=op, json=body)
    assert put.status_code == 200, put.text
    stored = put.json()
    assert stored | {"updated_at": None} == {
        "project_id": project, "account_id": "a0", "channels": ["wechat"],
        "templates": ["arrears", "power_restore_failed"], "locale": "en",
        "quiet_hours": {"start": "22:30", "end": "07:00"}, "timezone": "Asia/Urumqi", "set_by": username,
        "updated_at": None,
    }  # fmt: skip
    assert stored["updated_at"] is not None
    assert (await h.client.get(PATH, headers=cashier)).json() == stored  # read your write

    # the read model's copy is the fact as decoded from mf.notifications: notify folds it so
    fact = h.views.subscriptions[(project, "a0")]
    assert isinstance(fact, SubscriptionSet) and fact.subject_id == "a0" and fact.key == b"a0"
    folded = settings_from(AccountSettings(account_id="a0", name="holder", phone="+8613800138000"), fact)
    assert folded.channels == {Channel.WECHAT} and folded.locale == "en"
    assert folded.templates == {Template.ARREARS, Template.POWER_RESTORE_FAILED}
    assert folded.quiet_hours == QuietHours(time(22, 30), time(7, 0), "Asia/Urumqi")

    # a PUT replaces the whole settings: what it leaves out is back to its default
    reset = await h.client.put(PATH, headers=op, json={"channels": []})
    assert reset.status_code == 200, reset.text
    assert reset.json() | {"updated_at": None} == {
        "project_id": project, "account_id": "a0", **DEFAULTS, "channels": [], "set_by": username,
    }  # fmt: skip
    assert settings_from(folded, h.views.subscriptions[(project, "a0")]).channels == frozenset()

    assert_problem(await h.client.put(PATH, headers=cashier, json={}), 403)
    assert_problem(await h.client.get("/accounts/a9/notifications", headers=op), 404)
    assert_problem(await h.client.put("/accounts/a9/notifications", headers=op, json={}), 404)


async def test_another_projects_principal_gets_404_and_each_project_keeps_its_own(harness: Harness) -> None:
    h = harness
    run = uuid.uuid4().hex[:8]
    a, b = f"pna-{run}", f"pnb-{run}"
    await seed(h, a)
    await seed(h, b)  # a0 exists in both
    _, in_a = await h.user(("operator",), (a,))
    _, outsider = await h.user(("admin",), (f"pnc-{run}",))
    assert (await h.client.put(PATH, headers=in_a, json={"locale": "en"})).status_code == 200

    assert_problem(await h.client.get(PATH, headers=outsider), 404)
    assert_problem(await h.client.put(PATH, headers=outsider, json={"locale": "zh"}), 404)
    assert_problem(await h.client.get(PATH, headers=in_a, params={"project_id": b}), 404)
    assert_problem(await h.client.put(PATH, headers=in_a, params={"project_id": b}, json={}), 404)

    _, office = await h.user(("operator",), (a, b))
    assert_problem(await h.client.get(PATH, headers=office), 409)  # a0 in both: say which
    theirs = await h.client.get(PATH, headers=office, params={"project_id": b})
    assert theirs.json()["project_id"] == b and theirs.json()["locale"] == "zh"  # b's a0 untouched
    put = await h.client.put(PATH, headers=office, params={"project_id": b}, json={"channels": ["sms"]})
    assert put.json()["project_id"] == b and put.json()["channels"] == ["sms"]
    mine = (await h.client.get(PATH, headers=in_a)).json()
    assert (mine["locale"], mine["channels"]) == ("en", ["sms", "wechat"])

    _, consumer = await h.user(("consumer",), (a,), accounts=("a0",))
    assert_problem(await h.client.get(PATH, headers=consumer), 403)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"templates": ["arrears", "birthday"]}, ["body", "templates", "1"]),
        ({"channels": ["fax"]}, ["body", "channels", "0"]),
        ({"locale": "fr"}, ["body", "locale"]),
        ({"quiet_hours": {"start": "24:00", "end": "07:00"}}, ["body", "quiet_hours", "start"]),
        ({"quiet_hours": {"start": "7:00", "end": "22:00"}}, ["body", "quiet_hours", "start"]),
        ({"quiet_hours": {"start": "22:00"}}, ["body", "quiet_hours", "end"]),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, ["body", "quiet_hours"]),
        ({"timezone": "Mars/Olympus_Mons"}, ["body", "timezone"]),
        ({"timezone": "America"}, ["body", "timezone"]),  # a directory of the zone database
        ({"timezone": "../../etc/passwd"}, ["body", "timezone"]),
        ({"phone": "+8613800138000"}, ["body", "phone"]),  # contact details are the account's
    ],
)
async def test_bad_settings_are_a_422_problem_and_write_nothing(
    harness: Harness, body: dict[str, Any], loc: list[str]
) -> None:
    h = harness
    project = f"pv-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    _, op = await h.user(("operator",), (project,))
    problem = assert_problem(await h.client.put(PATH, headers=op, json=body), 422)
    errors = problem["errors"]
    assert isinstance(errors, list) and [e["loc"] for e in errors] == [loc], problem
    assert (project, "a0") not in h.views.subscriptions


def test_the_api_defaults_are_the_facts_defaults() -> None:
    fact = SubscriptionSet(project_id="p", subject_id="a", account_id="a")
    body = NotificationSettingsIn()
    assert tuple(body.channels) == fact.channels and body.templates is fact.templates
    assert (body.locale, body.quiet_hours, body.timezone) == (fact.locale, None, fact.timezone)
    assert fact.quiet_start_minute is None and fact.quiet_end_minute is None
