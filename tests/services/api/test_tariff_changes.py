"""Moving an account to another tariff (``POST /accounts/{id}/tariff-changes``): pending until its
effective instant, then in force; never backdated; once per Idempotency-Key; and priced by the
real billing worker from the change on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.events import (
    AccountOpened,
    AccountTariffChanged,
    BalanceChanged,
    ReadingRecorded,
    Route,
    TariffPublished,
)
from libs.stack.broker import EmbeddedBroker
from services.api.tariff_changes import BACKDATE_TOLERANCE
from services.api.views import Views
from services.billing.domain import ledger
from tests.services.api.conftest import T0, Harness, seed, site, with_billing
from tests.services.api.test_auth import assert_problem

PATH = "/accounts/a0/tariff-changes"


def tariff(project: str, tariff_id: str, price_fen: str = "80") -> TariffPublished:
    return TariffPublished(
        project_id=project, subject_id=tariff_id, tariff_id=tariff_id, version=1, name=tariff_id,
        effective_from=T0 - timedelta(days=30), definition={"kind": "single", "price_fen": price_fen},
    )  # fmt: skip


def fact(n: int, tariff_id: str, effective: datetime, recorded: datetime = T0) -> AccountTariffChanged:
    return AccountTariffChanged(
        event_id=f"chg-{n}", project_id="p1", subject_id="a0", account_id="a0", tariff_id=tariff_id,
        effective_from=effective, operator_id="op", time=recorded,
    )  # fmt: skip


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"tc-{uuid.uuid4().hex}"}


def when(body: dict[str, Any], name: str) -> datetime:
    return datetime.fromisoformat(body[name])


def test_the_fold_keeps_the_history_and_agrees_with_billing_on_the_tariff_in_force() -> None:
    hour = timedelta(hours=1)
    facts = [
        fact(1, "t2", T0 + 2 * hour),
        fact(2, "t3", T0 + hour),
        fact(3, "t4", T0 - hour, recorded=T0 + hour / 2),  # asked for the past: from when recorded
        fact(4, "t5", T0 + 2 * hour, recorded=T0 + hour / 6),  # the same instant, later: replaces t2
    ]
    views = Views()
    for e in [facts[0], *site("p1"), *facts[1:], facts[0]]:  # a change before the opening; redelivery
        views.apply(e)
    account = views.accounts[("p1", "a0")]
    history = [(c.tariff_id, c.effective, c.superseded) for c in views.tariff_changes_of(account)]
    assert history == [
        ("t4", T0 + hour / 2, False), ("t3", T0 + hour, False), ("t2", T0 + 2 * hour, True),
        ("t5", T0 + 2 * hour, False),
    ]  # fmt: skip
    opened = next(e for e in site("p1") if isinstance(e, AccountOpened))
    billed = ledger.opened(opened)
    for e in facts:
        billed = ledger.change_tariff(billed, e)
    for minutes in range(-30, 200, 10):
        instant = T0 + timedelta(minutes=minutes)
        assert views.tariff_at(account, instant) == billed.tariff_at(instant), instant
    assert views.tariff_at(account, T0) == "t1" and views.tariff_at(account, T0 + 3 * hour) == "t5"
    upcoming = views.next_tariff_change(account, T0 + hour)
    assert upcoming is not None and upcoming.tariff_id == "t5"  # the superseded t2 is skipped
    assert views.next_tariff_change(account, T0 + 2 * hour) is None


async def test_a_change_is_pending_until_it_takes_effect_then_in_force(harness: Harness) -> None:
    h, api = harness, harness.app.state.api
    project = f"pt-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    await h.publish(tariff(project, "t2"), tariff(project, "t3"))
    await h.until(lambda: (project, "t3") in h.views.tariffs or None)
    name, op = await h.user(("operator",), (project,))
    now = datetime.now(UTC)

    async def change(tariff_id: str, at: datetime | None = None) -> dict[str, Any]:
        body = {"tariff_id": tariff_id, "reason": "moved to commercial"}
        response = await h.client.post(
            PATH, headers=op | key(), json=body | ({"effective_from": at.isoformat()} if at else {})
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def account() -> dict[str, Any]:
        response = await h.client.get("/accounts/a0", headers=op)
        assert response.status_code == 200, response.text
        return dict(response.json())

    later = await change("t2", now + timedelta(hours=2))
    assert (later["project_id"], later["account_id"], later["tariff_id"]) == (project, "a0", "t2")
    assert when(later, "effective_at") == when(later, "effective_from") == now + timedelta(hours=2)
    assert later["operator_id"] == name and later["reason"] == "moved to commercial"
    assert not later["superseded"] and now <= when(later, "recorded_at") <= datetime.now(UTC)
    sooner = await change("t3", now + timedelta(hours=1))
    before = await account()
    assert (before["tariff_id"], before["opening_tariff_id"]) == ("t1", "t1")
    assert before["next_tariff_change"] == sooner
    listed = (await h.client.get(PATH, headers=op)).json()
    assert [c["id"] for c in listed["items"]] == [sooner["id"], later["id"]] and listed["total"] == 2
    paged = (await h.client.get(PATH, headers=op, params={"limit": 1})).json()
    assert [c["id"] for c in paged["items"]] == [sooner["id"]] and paged["next"]

    api.clock = lambda: now + timedelta(minutes=90)
    between = await account()
    assert between["tariff_id"] == "t3" and between["next_tariff_change"] == later
    api.clock = lambda: now + timedelta(hours=3)
    after = await account()
    assert (after["tariff_id"], after["opening_tariff_id"], after["next_tariff_change"]) == ("t2", "t1", None)
    many = (await h.client.get("/accounts", headers=op, params={"project_id": project})).json()["items"]
    assert [(a["account_id"], a["tariff_id"]) for a in many] == [("a0", "t2")]

    at_once = await change("t1")  # no effective_from: now
    assert when(at_once, "effective_at") == when(at_once, "recorded_at") == now + timedelta(hours=3)
    assert (await account())["tariff_id"] == "t1"


async def test_changes_are_checked_and_never_backdated(harness: Harness) -> None:
    h = harness
    run = uuid.uuid4().hex[:8]
    mine, other = f"pv-{run}", f"pw-{run}"
    for p in (mine, other):
        await seed(h, p)
    later = tariff(mine, "t3").model_copy(update={"effective_from": datetime.now(UTC) + timedelta(days=1)})
    await h.publish(
        tariff(mine, "t2"), tariff(other, "t9"), later,
        AccountOpened(project_id=other, subject_id="a5", account_id="a5", mode="prepaid", meter_ids=("m1",),
                      tariff_id="t1", holder="elsewhere", opened_by="test"),
    )  # fmt: skip
    await h.until(
        lambda: ((mine, "t3") in h.views.tariffs and (mine, "t2") in h.views.tariffs
                 and h.views.accounts.get((other, "a5"))) or None
    )  # fmt: skip
    _, op = await h.user(("operator",), (mine,))
    _, office = await h.user(("operator",), (mine, other))
    _, cashier = await h.user(("cashier",), (mine,))
    now = datetime.now(UTC)

    async def post(body: dict[str, Any], headers: dict[str, str] = op, path: str = PATH) -> httpx.Response:
        return await h.client.post(path, headers=headers | key(), json=body)

    unknown = assert_problem(await post({"tariff_id": "t-none"}), 422)
    assert "not published" in str(unknown["detail"])
    assert_problem(await post({"tariff_id": "t9"}), 422)  # published, but in the other project
    same = assert_problem(await post({"tariff_id": "t1"}), 422)
    assert "already on tariff 't1'" in str(same["detail"])
    past = now - BACKDATE_TOLERANCE - timedelta(minutes=5)
    backdated = assert_problem(await post({"tariff_id": "t2", "effective_from": past.isoformat()}), 422)
    assert "never backdated" in str(backdated["detail"])
    early = assert_problem(await post({"tariff_id": "t3"}), 422)  # its first version starts tomorrow
    assert "no version in force" in str(early["detail"])

    assert_problem(await post({"tariff_id": "t9"}, path="/accounts/a5/tariff-changes"), 404)  # not mine
    assert_problem(await h.client.get("/accounts/a5/tariff-changes", headers=op), 404)
    assert_problem(await post({"tariff_id": "t2"}, path="/accounts/zz/tariff-changes"), 404)
    assert_problem(await post({"tariff_id": "t2"}, headers=office), 409)  # a0 is in both projects
    there = await post({"tariff_id": "t9"}, headers=office, path=f"{PATH}?project_id={other}")
    assert there.status_code == 201 and there.json()["project_id"] == other
    assert_problem(await post({"tariff_id": "t2"}, headers=cashier), 403)

    for bad in ({}, {"tariff_id": "t2", "colour": "red"}, {"tariff_id": "t2", "effective_from": "2030-01-01T00:00"},
                {"tariff_id": "t2", "reason": "x" * 501}, {"tariff_id": "no spaces"}):  # fmt: skip
        assert_problem(await post(bad), 422)
    no_key = await h.client.post(PATH, headers=op, json={"tariff_id": "t2"})
    assert_problem(no_key, 422)

    skewed = now - BACKDATE_TOLERANCE / 2  # clock skew: taken as when it is recorded
    ok = await post({"tariff_id": "t2", "effective_from": skewed.isoformat()})
    assert ok.status_code == 201, ok.text
    assert when(ok.json(), "effective_at") == when(ok.json(), "recorded_at") > skewed
    assert (await h.client.get("/accounts/a0", headers=op)).json()["tariff_id"] == "t2"
    assert [c["tariff_id"] for c in (await h.client.get(PATH, headers=op)).json()["items"]] == ["t2"]


async def test_the_same_idempotency_key_makes_one_change(harness: Harness) -> None:
    h = harness
    project = f"pi-{uuid.uuid4().hex[:8]}"
    await seed(h, project)
    await h.publish(tariff(project, "t2"), tariff(project, "t3"))
    await h.until(lambda: (project, "t3") in h.views.tariffs or None)
    _, op = await h.user(("operator",), (project,))
    once = key()
    first = await h.client.post(PATH, headers=op | once, json={"tariff_id": "t2"})
    assert first.status_code == 201, first.text
    # answered as before, although the account is now on t2 (which a new request could not ask)
    again = await h.client.post(PATH, headers=op | once, json={"tariff_id": "t2"})
    assert again.status_code == 201 and again.json() == first.json()
    explicit = {"tariff_id": "t2", "effective_from": first.json()["effective_from"]}
    assert (await h.client.post(PATH, headers=op | once, json=explicit)).json() == first.json()
    for different in ({"tariff_id": "t3"}, {"tariff_id": "t2", "reason": "other"},
                      {"tariff_id": "t2", "effective_from": (datetime.now(UTC) + timedelta(days=1)).isoformat()}):  # fmt: skip
        assert_problem(await h.client.post(PATH, headers=op | once, json=different), 409)
    listed = (await h.client.get(PATH, headers=op)).json()
    assert listed["total"] == 1 and listed["items"][0] == first.json()


def _readings(project: str, at: datetime, registers: list[tuple[timedelta, str]]) -> list[ReadingRecorded]:
    return [
        ReadingRecorded(
            project_id=project, subject_id="m0", meter_id="m0", time=at + offset, received_at=at + offset,
            route=Route(concentrator_id="c1", bus_id="b1"), registers={"active_import_kwh": {"total": Decimal(kwh)}},
        )
        for offset, kwh in registers
    ]  # fmt: skip


@pytest.mark.slow
async def test_billing_prices_use_after_the_change_by_the_new_tariff(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    project = "p-tariff-change"
    async with with_billing(fresh_broker.bootstrap, tmp_path / "billing") as h:
        opening = [e for e in site(project) if not isinstance(e, BalanceChanged)]
        await h.publish(*opening, tariff(project, "t2", price_fen="80"))  # t1 costs 50 fen/kWh
        await h.until(
            lambda: (h.views.accounts.get((project, "a0")) and (project, "t2") in h.views.tariffs) or None
        )
        _, op = await h.user(("operator",), (project,))
        # an hour ahead, so that every reading comes after the opening (use before it is not charged)
        at = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
        if time(14) <= at.time() <= time(17):  # keep Shanghai's midnight (16:00Z) out of the readings
            at = at.replace(hour=17, minute=30)
        changed = await h.client.post(
            PATH, headers=op | key(), json={"tariff_id": "t2", "effective_from": at.isoformat()}
        )
        assert changed.status_code == 201, changed.text
        half = timedelta(minutes=30)
        await h.publish(*_readings(project, at, [(-half, "100"), (half, "110"), (3 * half, "112")]))
        # 10 kWh across the change: 5 at 50 + 5 at 80; then 2 kWh at 80 (all at t1 would be -600)
        expected = -(250 + 400 + 160)
        await h.until(lambda: h.views.accounts[(project, "a0")].balance_fen == expected or None, timeout=60)
        balance = await h.client.get("/accounts/a0/balance", headers=op)
        assert balance.json()["balance_fen"] == expected
