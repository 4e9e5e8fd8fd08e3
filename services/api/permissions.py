"""Roles and the permissions each grants: data, not code, so that the permission-matrix test and
`GET /roles` read the same table the routes enforce.

Accounts (users, API keys) hold roles; a route names the one permission it needs.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    """One thing a caller may do."""

    PROJECTS_READ = "projects:read"
    PROJECTS_WRITE = "projects:write"
    TOPOLOGY_READ = "topology:read"
    METERS_READ_NOW = "meters:read-now"
    READINGS_READ = "readings:read"
    ACCOUNTS_READ = "accounts:read"
    ACCOUNTS_WRITE = "accounts:write"
    BALANCES_READ = "balances:read"
    NOTIFICATIONS_READ = "notifications:read"  # accounts' notification settings and the send log
    NOTIFICATIONS_WRITE = "notifications:write"
    MONEY_RECHARGE = "money:recharge"
    MONEY_REFUND = "money:refund"
    MONEY_CLEAR = "money:clear"
    MONEY_ALLOWANCE = "money:allowance"
    ALLOWANCE_PLANS_READ = "allowance-plans:read"  # a project's standing allowances (B3)
    ALLOWANCE_PLANS_WRITE = "allowance-plans:write"
    TARIFFS_READ = "tariffs:read"
    TARIFFS_PUBLISH = "tariffs:publish"
    COMMANDS_READ = "commands:read"
    COMMANDS_ISSUE = "commands:issue"
    ALARMS_READ = "alarms:read"
    REPORTS_READ = "reports:read"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    KEYS_WRITE = "keys:write"
    WEBHOOKS_WRITE = "webhooks:write"


P = Permission
_READ_ALL = {
    P.PROJECTS_READ, P.TOPOLOGY_READ, P.READINGS_READ, P.ACCOUNTS_READ, P.BALANCES_READ,
    P.NOTIFICATIONS_READ, P.TARIFFS_READ, P.COMMANDS_READ, P.ALARMS_READ, P.REPORTS_READ,
    P.ALLOWANCE_PLANS_READ,
}  # fmt: skip

ROLES: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "operator": frozenset(
        _READ_ALL
        | {P.ACCOUNTS_WRITE, P.NOTIFICATIONS_WRITE}
        | {P.MONEY_RECHARGE, P.MONEY_REFUND, P.MONEY_CLEAR, P.MONEY_ALLOWANCE, P.ALLOWANCE_PLANS_WRITE}
        | {P.TARIFFS_PUBLISH, P.COMMANDS_ISSUE, P.METERS_READ_NOW}
    ),
    "cashier": frozenset(
        {P.PROJECTS_READ, P.ACCOUNTS_READ, P.NOTIFICATIONS_READ, P.BALANCES_READ, P.TARIFFS_READ}
        | {P.MONEY_RECHARGE, P.REPORTS_READ}
    ),
    "engineer": frozenset(
        {P.PROJECTS_READ, P.TOPOLOGY_READ, P.READINGS_READ, P.COMMANDS_READ, P.COMMANDS_ISSUE}
        | {P.METERS_READ_NOW, P.ALARMS_READ}
    ),
    "viewer": frozenset(_READ_ALL),
    # a consumer sees its own project's balances and readings (self-service, F7)
    "consumer": frozenset({P.BALANCES_READ, P.READINGS_READ}),
}
"""Role name → permissions."""


def permissions_of(roles: tuple[str, ...] | frozenset[str]) -> frozenset[Permission]:
    """The union of the permissions of ``roles`` (unknown role names grant nothing)."""
    out: set[Permission] = set()
    for role in roles:
        out |= ROLES.get(role, frozenset())
    return frozenset(out)
