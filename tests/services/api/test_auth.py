"""Authentication and the login log: password flow → JWT, API keys, disabled users, problem+json."""

from __future__ import annotations

import uuid

import httpx
from pydantic import SecretStr

from libs.events.topics import CATALOGUE
from libs.stack.broker import EmbeddedBroker, ensure_topics
from services.api.app import create_app
from services.api.problems import MEDIA_TYPE
from tests.services.api.conftest import CLIENT_IP, PASSWORD, Harness, settings


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(MEDIA_TYPE)
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    assert body["instance"] == response.request.url.path
    return body


async def _login(h: Harness, username: str, password: str) -> httpx.Response:
    return await h.client.post("/auth/token", data={"username": username, "password": password})


async def test_login_issues_a_token_that_opens_endpoints_and_the_log_records_ip(harness: Harness) -> None:
    h = harness
    project = f"p-{uuid.uuid4().hex[:8]}"
    username, _ = await h.user(("viewer",), (project,))
    bad = await _login(h, username, "wrong password")
    assert_problem(bad, 401)
    assert bad.headers["www-authenticate"] == "Bearer"
    ok = await _login(h, username, PASSWORD)
    assert ok.status_code == 200, ok.text
    token = ok.json()["access_token"]
    me = await h.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["name"] == username and me.json()["roles"] == ["viewer"]
    assert "balances:read" in me.json()["permissions"] and "money:recharge" not in me.json()["permissions"]

    await h.until(lambda: sum(1 for e in h.views.logins if e.username == username) == 2 or None)
    _, admin = await h.user(("admin",), all_projects=True)
    log = await h.client.get("/login-log", params={"username": username}, headers=admin)
    assert log.status_code == 200
    entries = log.json()["items"]
    assert [(e["succeeded"], e["ip"]) for e in entries] == [(True, CLIENT_IP), (False, CLIENT_IP)]
    assert entries[1]["reason"] == "bad credentials"


async def test_requests_without_or_with_bad_credentials_are_401_problems(harness: Harness) -> None:
    h = harness
    assert_problem(await h.client.get("/meters"), 401)
    assert_problem(await h.client.get("/meters", headers={"Authorization": "Bearer not.a.jwt"}), 401)
    assert_problem(await h.client.get("/meters", headers={"X-API-Key": "mf_nope_nope"}), 401)
    assert_problem(await _login(h, f"nobody-{uuid.uuid4().hex}", PASSWORD), 401)


async def test_disabled_user_is_refused_at_login_and_with_an_existing_token(harness: Harness) -> None:
    h = harness
    username, headers = await h.user(("operator",), ("p-x",))
    _, admin = await h.user(("admin",), all_projects=True)
    assert (await h.client.get("/auth/me", headers=headers)).status_code == 200
    user_id = h.views.usernames[username]
    disabled = await h.client.post(f"/users/{user_id}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert_problem(await h.client.get("/auth/me", headers=headers), 401)
    assert_problem(await _login(h, username, PASSWORD), 401)
    await h.until(
        lambda: any(e.username == username and e.reason == "disabled" for e in h.views.logins) or None
    )
    enabled = await h.client.post(f"/users/{user_id}/enable", headers=admin)
    assert enabled.status_code == 200
    assert (await _login(h, username, PASSWORD)).status_code == 200


async def test_api_key_authenticates_with_its_roles_and_stops_when_revoked(harness: Harness) -> None:
    h = harness
    project = f"p-{uuid.uuid4().hex[:8]}"
    _, admin = await h.user(("admin",), all_projects=True)
    issued = await h.client.post(
        "/api-keys", headers=admin, json={"name": "erp", "roles": ["cashier"], "project_ids": [project]}
    )
    assert issued.status_code == 201, issued.text
    key = issued.json()["key"]
    assert key.startswith("mf_")
    listed = await h.client.get("/api-keys", headers=admin)
    assert all(k["key"] is None for k in listed.json()["items"])  # shown once only
    me = await h.client.get("/auth/me", headers={"X-API-Key": key})
    assert me.status_code == 200 and me.json()["kind"] == "api_key" and me.json()["project_ids"] == [project]
    assert_problem(await h.client.get("/commands", headers={"X-API-Key": key}), 403)  # a cashier
    assert_problem(await h.client.get("/auth/me", headers={"X-API-Key": key[:-2] + "zz"}), 401)
    revoked = await h.client.delete(f"/api-keys/{issued.json()['key_id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert_problem(await h.client.get("/auth/me", headers={"X-API-Key": key}), 401)


async def test_a_principal_cannot_grant_more_than_it_holds(harness: Harness) -> None:
    h = harness
    _, scoped_admin = await h.user(("admin",), ("p-a",))
    wide = await h.client.post(
        "/users", headers=scoped_admin, json={"username": f"x{uuid.uuid4().hex[:6]}", "password": PASSWORD,
                                             "roles": ["viewer"], "all_projects": True},
    )  # fmt: skip
    assert_problem(wide, 403)
    other = await h.client.post(
        "/users", headers=scoped_admin, json={"username": f"x{uuid.uuid4().hex[:6]}", "password": PASSWORD,
                                             "roles": ["viewer"], "project_ids": ["p-b"]},
    )  # fmt: skip
    assert_problem(other, 403)
    _, cashier_admin = await h.user(("cashier", "admin"), ("p-a",))
    ok = await h.client.post(
        "/users", headers=cashier_admin, json={"username": f"x{uuid.uuid4().hex[:6]}", "password": PASSWORD,
                                              "roles": ["cashier"], "project_ids": ["p-a"]},
    )  # fmt: skip
    assert ok.status_code == 201, ok.text
    assert_problem(await h.client.post("/users", headers=scoped_admin, json={"username": "x"}), 422)
    consumer = {
        "username": f"c{uuid.uuid4().hex[:6]}",
        "password": PASSWORD,
        "roles": ["consumer"],
        "project_ids": ["p-a"],
    }
    assert_problem(
        await h.client.post("/users", headers=scoped_admin, json=consumer), 422
    )  # needs account_ids
    own = await h.client.post("/users", headers=scoped_admin, json=consumer | {"account_ids": ["a0"]})
    assert own.status_code == 201 and own.json()["account_ids"] == ["a0"]


async def test_fresh_install_creates_the_configured_admin_once(fresh_broker: EmbeddedBroker) -> None:
    bootstrap = fresh_broker.bootstrap
    ensure_topics(bootstrap, CATALOGUE)
    for attempt in range(2):  # a restart (or a second replica) must not create a second admin
        app = create_app(
            settings(api_admin_user="root", api_admin_password=SecretStr("s3cret-pass")), bootstrap
        )
        async with app.router.lifespan_context(app):
            users = app.state.api.views.users
            assert [u.username for u in users.values()] == ["root"], attempt
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                token = await client.post("/auth/token", data={"username": "root", "password": "s3cret-pass"})
                assert token.status_code == 200, token.text
                assert (await client.get("/readyz")).status_code == 200
