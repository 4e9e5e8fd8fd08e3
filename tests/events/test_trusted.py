"""trusted(): events built without validation equal validated ones, and checking mode catches
fields that are not what validation would make of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from libs.events import trusted as trusted_module
from libs.events.acquisition import Rate
from libs.events.billing import BalanceChanged, ChargeLine
from libs.events.trusted import UntrustedFields, trusted

T = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def balance_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "event_id": "e1",
        "project_id": "p1",
        "subject_id": "a1",
        "sequence": 0,
        "time": T,
        "causation_id": "r1",
        "correlation_id": "r1",
        "account_id": "a1",
        "delta_fen": -25,
        "balance_fen": 975,
        "reason": "charge",
    }
    return {**fields, **changes}


@pytest.fixture(params=[False, True], ids=["fast", "checking"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(trusted_module, "CHECK", request.param)
    return bool(request.param)


def test_equal_to_the_validated_event_in_either_mode(mode: bool) -> None:
    built = trusted(BalanceChanged, balance_fields())
    validated = BalanceChanged.model_validate(balance_fields())
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.key == b"a1"
    with pytest.raises(Exception, match="frozen"):
        built.balance_fen = 0  # type: ignore[misc]


def test_missing_defaults_are_filled_in_declaration_order(mode: bool) -> None:
    fields = balance_fields()
    del fields["sequence"], fields["causation_id"]
    built = trusted(BalanceChanged, fields)
    assert built.sequence == 0 and built.causation_id is None
    assert built.model_dump_json() == BalanceChanged.model_validate(fields).model_dump_json()


def test_nested_models_and_decimals() -> None:
    line = {"tariff_id": "t", "version": 1, "category": "", "component": "energy", "rate": Rate.TOTAL,
            "tier": 0, "units": Decimal("0.25"), "price_fen": Decimal("50"), "amount_fen": 13}  # fmt: skip
    assert trusted(ChargeLine, line) == ChargeLine.model_validate(line)


@pytest.mark.parametrize(
    "bad",
    [
        {"delta_fen": "-25"},  # a string where validation makes an int
        {"time": T.astimezone(timezone(timedelta(hours=8)))},  # validation moves time to UTC
        {"event_id": ""},  # a constraint
        {"unknown": 1},  # not a field
    ],
)
def test_checking_mode_rejects_fields_validation_would_change(bad: dict[str, object]) -> None:
    assert trusted_module.CHECK, "the test suite runs with MF_EVENTS_CHECK_TRUSTED set"
    with pytest.raises((UntrustedFields, ValueError)):
        trusted(BalanceChanged, balance_fields(**bad))


def test_checking_mode_rejects_fields_out_of_declaration_order() -> None:
    fields = balance_fields()
    reordered = {"reason": fields.pop("reason"), **fields}
    with pytest.raises(UntrustedFields, match="validation gives"):
        trusted(BalanceChanged, reordered)
