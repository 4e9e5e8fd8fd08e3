from __future__ import annotations

from libs.events import AccountOpened
from libs.events.billing import BillingMode
from services.control.domain.directory import Directory, apply, route
from tests.services.control.helpers import arrears, arrears_cleared, at, env, reading

T = at(2024, 1, 1)


def test_account_alarms_fan_out_to_the_accounts_meters() -> None:
    opened = AccountOpened(**env(T, "a1"), account_id="a1", mode=BillingMode.PREPAID, meter_ids=("m1", "m2"),
                           tariff_id="t1", holder="x", opened_by="op")  # fmt: skip
    d = apply(Directory(), opened)
    assert route(d, arrears(T, meter="a1")) == ("m1", "m2")
    assert route(d, arrears(T, meter="m7")) == ("m7",)  # an alarm raised on a meter
    assert route(d, reading(T, 1, meter="m3")) == ("m3",)
    assert route(d, opened) == ()


def test_alarms_listing_meters_route_without_the_account_and_clears_follow_their_alarm() -> None:
    raised = arrears(T, meter="a9").model_copy(update={"details": {"meter_ids": "m4,m5"}})
    assert route(Directory(), raised) == ("m4", "m5")  # AccountOpened not seen yet (replay order)
    d = apply(Directory(), raised)
    cleared = arrears_cleared(T, meter="a9")
    assert route(d, cleared) == ("m4", "m5")
    assert apply(d, cleared).alarms == {}
    assert route(Directory(), cleared) == ("a9",)  # unknown alarm and account: taken as a meter


def test_projects_reusing_an_account_id_keep_their_own_meters() -> None:
    def opened(project: str, *meters: str) -> AccountOpened:
        return AccountOpened(**{**env(T, "a1"), "project_id": project}, account_id="a1", mode=BillingMode.PREPAID,
                             meter_ids=meters, tariff_id="t1", holder="x", opened_by="op")  # fmt: skip

    d = apply(apply(Directory(), opened("east", "m1")), opened("west", "m9"))
    alarm = arrears(T, meter="a1")
    assert route(d, alarm.model_copy(update={"project_id": "east"})) == ("m1",)
    assert route(d, alarm.model_copy(update={"project_id": "west"})) == ("m9",)
