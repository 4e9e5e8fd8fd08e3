from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.control.domain.schedules import TimeControl, is_off, next_change
from tests.services.control.helpers import at

# nights before weekdays (Sun–Thu), 23:30 → 06:30, Shanghai (UTC+8 all year, no DST)
DORM = TimeControl(off="30 23 * * 0-4", on="30 6 * * *", holidays=frozenset({date(2024, 10, 1)}))


@pytest.mark.parametrize(
    ("when", "off"),
    [
        (at(2024, 9, 24, 23, 29, 59), False),  # Tuesday, a second before
        (at(2024, 9, 24, 23, 30), True),  # exactly at the boundary: off
        (at(2024, 9, 25, 0, 0), True),  # across midnight
        (at(2024, 9, 25, 6, 29, 59), True),
        (at(2024, 9, 25, 6, 30), False),  # exactly at the on boundary: on
        (at(2024, 9, 27, 23, 45), False),  # Friday night: no off firing
        (at(2024, 9, 29, 23, 45), True),  # Sunday night: off before Monday
        (at(2024, 10, 1, 23, 45), False),  # holiday (Tuesday): exempt
        (at(2024, 10, 2, 3, 0), False),  # still exempt after midnight
        (at(2024, 10, 2, 23, 45), True),  # the next working night is off again
    ],
)
def test_dormitory_schedule(when, off) -> None:
    assert is_off(DORM, when) is off


def test_zone_is_applied_to_utc_instants() -> None:
    utc_2330 = at(2024, 9, 24, 23, 30).astimezone(tz=None)
    assert is_off(DORM, utc_2330)
    assert is_off(DORM.model_copy(update={"tz": "UTC"}), at(2024, 9, 24, 23, 30)) is False  # 15:30 UTC


def test_next_change_crosses_midnight() -> None:
    assert next_change(DORM, at(2024, 9, 24, 23, 30)) == at(2024, 9, 25, 6, 30)
    assert next_change(DORM, at(2024, 9, 24, 12, 0)) == at(2024, 9, 24, 23, 30)
    assert next_change(DORM, at(2024, 9, 24, 12, 0)) - at(2024, 9, 24, 12, 0) == timedelta(
        hours=11, minutes=30
    )


def test_invalid_and_naive_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="cron"):
        TimeControl(off="61 * * * *", on="0 6 * * *")
    with pytest.raises(ValueError, match="aware"):
        is_off(DORM, at(2024, 9, 24, 23, 30).replace(tzinfo=None))
