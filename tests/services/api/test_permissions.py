"""The role × endpoint permission matrix, driven from the app's route table: every route either is
public by name or declares a permission, and each role gets 403 exactly where the table says."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from services.api.app import PUBLIC_PATHS, SELF_PATHS, api_routes, create_app, permission_of
from services.api.permissions import ROLES, Permission
from tests.services.api.conftest import Harness, settings


def routes() -> list[APIRoute]:
    app = create_app(settings(), "127.0.0.1:1")
    return [r for r in api_routes(app) if r.include_in_schema]


def test_every_route_is_public_by_name_or_declares_a_permission() -> None:
    for route in routes():
        permission = permission_of(route)
        if route.path in PUBLIC_PATHS | SELF_PATHS:
            assert permission is None, route.path
        else:
            assert permission is not None, f"{route.methods} {route.path} declares no permission"
            assert permission in {p.value for p in Permission}


def test_every_permission_is_used_by_some_route_and_admin_holds_all() -> None:
    used = {permission_of(r) for r in routes()}
    assert {p.value for p in Permission} <= used
    assert ROLES["admin"] == frozenset(Permission)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_notification_settings_go_with_accounts(role: str) -> None:
    granted = ROLES[role]
    assert (Permission.NOTIFICATIONS_READ in granted) == (Permission.ACCOUNTS_READ in granted)
    assert (Permission.NOTIFICATIONS_WRITE in granted) == (Permission.ACCOUNTS_WRITE in granted)
    paths = {(m, r.path): permission_of(r) for r in routes() for m in r.methods or ()}
    assert paths[("GET", "/accounts/{account_id}/notifications")] == Permission.NOTIFICATIONS_READ
    assert paths[("PUT", "/accounts/{account_id}/notifications")] == Permission.NOTIFICATIONS_WRITE
    assert paths[("GET", "/notifications")] == Permission.NOTIFICATIONS_READ  # the send log


@pytest.mark.parametrize("role", sorted(ROLES))
async def test_role_gets_403_exactly_where_the_table_says(harness: Harness, role: str) -> None:
    h = harness
    _, headers = await h.user((role,), ("p-matrix",))
    granted = {p.value for p in ROLES[role]}
    checked = 0
    for route in routes():
        if route.path in PUBLIC_PATHS:
            continue
        if route.path in SELF_PATHS:
            assert (await h.client.get(route.path, headers=headers)).status_code == 200
            continue
        path = re.sub(r"\{[^}]+\}", "nope", route.path)
        if route.path == "/reports/{report}":
            path = "/reports/sales?project_id=p-matrix"
        for method in route.methods or ():
            # no body: an allowed caller gets 404/422 (nothing is written), a refused one 403
            response = await h.client.request(method, path, headers=headers)
            allowed = permission_of(route) in granted
            assert response.status_code != 401, (method, path)
            if allowed:
                assert response.status_code != 403, (role, method, path, response.text)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)
                assert response.json()["detail"] == f"permission {permission_of(route)!r} required"
            checked += 1
    assert checked >= 35
