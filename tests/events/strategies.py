"""Hypothesis strategies for any event model, derived from its pydantic fields."""

from __future__ import annotations

import functools
import types
import typing
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

import annotated_types
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from libs.events.billing import AlarmThresholdsSet, AllowanceCycle, AllowancePlanSet
from libs.events.control import TimeControl

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
_aware = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]),
)


_CRON = st.sampled_from(["30 23 * * 0-4", "30 6 * * *", "0 0 1 * *", "*/15 8-18 * * 1-5"])
_ZONES = st.sampled_from(["Asia/Shanghai", "UTC", "Europe/Berlin"])
# Models whose string fields must hold cron expressions / zone names (validated on construction).
SPECIAL: dict[type[BaseModel], st.SearchStrategy[Any]] = {
    TimeControl: st.builds(
        TimeControl, off=_CRON, on=_CRON, tz=_ZONES, holidays=st.frozensets(st.dates(), max_size=3)
    ),
}
SPECIAL[AlarmThresholdsSet] = st.builds(  # level 2 <= level 1
    lambda level2, above, **kw: AlarmThresholdsSet(level1_fen=level2 + above, level2_fen=level2, **kw),
    level2=st.integers(min_value=-(10**6), max_value=10**6),
    above=st.integers(min_value=0, max_value=10**6),
    event_id=_text, project_id=_text, subject_id=_text, time=_aware,
    account_id=st.none() | _text, operator_id=_text,
)  # fmt: skip
_MONTH_DAYS = st.dates(min_value=date(2001, 1, 1), max_value=date(2001, 12, 31)).map(
    lambda d: d.strftime("%m-%d")
)
SPECIAL[AllowancePlanSet] = st.one_of(  # yearly plans name their starts (MM-DD), monthly ones none
    st.builds(
        AllowancePlanSet, cycle=st.just(AllowanceCycle.YEARLY), starts=st.lists(_MONTH_DAYS, min_size=1, max_size=4).map(tuple),
        **{name: _text for name in ("event_id", "project_id", "subject_id", "plan_id", "operator_id")},
        amount_fen=st.integers(min_value=1, max_value=10**9), tz=_ZONES, time=_aware,
        tariff_ids=st.lists(_text, max_size=2).map(tuple), account_ids=st.lists(_text, max_size=2).map(tuple),
        effective_from=st.none() | _aware, active=st.booleans(), reason=st.text(max_size=10),
    ),
    st.builds(
        AllowancePlanSet, cycle=st.just(AllowanceCycle.MONTHLY),
        **{name: _text for name in ("event_id", "project_id", "subject_id", "plan_id", "operator_id")},
        amount_fen=st.integers(min_value=1, max_value=10**9), tz=_ZONES, time=_aware,
    ),
)  # fmt: skip
SPECIAL_SAMPLES: dict[type[BaseModel], Any] = {
    TimeControl: TimeControl(
        off="30 23 * * 0-4", on="30 6 * * *", tz="Asia/Shanghai", holidays=frozenset({date(2026, 10, 1)})
    ),
    AllowancePlanSet: AllowancePlanSet(
        event_id="event_id-1", project_id="project_id-1", subject_id="plan-1", plan_id="plan-1", amount_fen=3000,
        cycle=AllowanceCycle.YEARLY, starts=("02-20", "09-01"), tz="Asia/Shanghai", tariff_ids=("t1",),
        account_ids=("a1",), effective_from=datetime(2026, 11, 21, 8, 30, 15, 250000, tzinfo=UTC),
        operator_id="operator_id-1", reason="reason-1", time=datetime(2026, 11, 21, 8, 30, 15, 250000, tzinfo=UTC),
    ),
}  # fmt: skip


def _bounds(info: FieldInfo | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in info.metadata if info else []:
        if isinstance(m, annotated_types.Ge):
            out["min_value"] = m.ge
        elif isinstance(m, annotated_types.Gt):
            out["min_value"] = m.gt + 1
        elif isinstance(m, annotated_types.Le):
            out["max_value"] = m.le
        elif isinstance(m, annotated_types.MinLen):
            out["min_size"] = m.min_length
        elif isinstance(m, annotated_types.MaxLen):
            out["max_size"] = m.max_length
    return out


def for_type(tp: Any, info: FieldInfo | None = None) -> st.SearchStrategy[Any]:
    """A strategy producing valid values of annotation ``tp``."""
    b = _bounds(info)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is AwareDatetime or tp is datetime:
        return _aware
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(for_type(a, info) for a in args))
    if tp is type(None):
        return st.none()
    if origin is typing.Annotated:
        return for_type(args[0], info)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model(tp)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=b.get("min_value", -(2**53)), max_value=b.get("max_value", 2**53))
    if tp is Decimal:
        lo, hi = b.get("min_value", -(10**9)), b.get("max_value", 10**9)
        return st.decimals(min_value=lo, max_value=hi, places=4, allow_nan=False, allow_infinity=False)
    if tp is date:
        return st.dates()
    if tp is str:
        lo, hi = b.get("min_size", 0), min(b.get("max_size", 20), 20)
        return st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=lo, max_size=hi
        )
    if origin is dict:
        return st.dictionaries(for_type(args[0]), for_type(args[1]), max_size=3)
    if origin is tuple:
        return st.lists(for_type(args[0]), min_size=b.get("min_size", 0), max_size=3).map(tuple)
    if origin is list:
        return st.lists(for_type(args[0]), max_size=3)
    if origin is frozenset:
        return st.frozensets(for_type(args[0]), max_size=3)
    if tp is Any:  # free-form JSON values: integers within JSON's interoperable range, as above
        return st.one_of(st.integers(min_value=-(2**53), max_value=2**53), _text, st.booleans())
    raise NotImplementedError(f"no strategy for {tp!r}")


@functools.cache
def model(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Instances of ``cls`` with every field drawn from its annotation and constraints."""
    if cls in SPECIAL:
        return SPECIAL[cls]
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {
        name: _ZONES if name == "tz" else for_type(hints[name], info)
        for name, info in cls.model_fields.items()
    }
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


def sample_value(tp: Any, info: FieldInfo | None = None, name: str = "x") -> Any:
    """A deterministic valid value of annotation ``tp`` (every optional part filled in)."""
    b = _bounds(info)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is AwareDatetime or tp is datetime:
        return datetime(2026, 11, 21, 8, 30, 15, 250000, tzinfo=UTC)
    if origin in (typing.Union, types.UnionType):
        return sample_value(next(a for a in args if a is not type(None)), info, name)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return list(tp)[-1]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return sample(tp)
    if tp is bool:
        return True
    if tp is int:
        return max(b.get("min_value", 7), min(7, b.get("max_value", 7)))
    if tp is Decimal:
        return min(
            max(Decimal("1234.56"), Decimal(b.get("min_value", 0))), Decimal(b.get("max_value", 10**9))
        )
    if tp is date:
        return date(2026, 10, 1)
    if tp is str:
        return f"{name}-1"
    if origin is dict:
        return {sample_value(args[0], None, name): sample_value(args[1], None, name)}
    if origin in (tuple, list, frozenset):
        return origin([sample_value(args[0], None, name)])
    if tp is Any:
        return {"kind": "single", "price_fen_per_kwh": 56}
    raise NotImplementedError(f"no sample for {tp!r}")


def sample(cls: type[BaseModel]) -> Any:
    """One fully populated instance of ``cls``."""
    if cls in SPECIAL_SAMPLES:
        return SPECIAL_SAMPLES[cls]
    hints = typing.get_type_hints(cls, include_extras=True)
    return cls(
        **{
            name: "Asia/Shanghai" if name == "tz" else sample_value(hints[name], info, name)
            for name, info in cls.model_fields.items()
        }
    )
