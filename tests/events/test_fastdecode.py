"""The msgspec fast path for packed readings: the same readings as pydantic or a fallback, never other.

For any message, :func:`decode_reading_batch` either returns exactly what pydantic's validation
of the batch gives (equal models, equal JSON) or None, and then :meth:`Codec.decode` behaves as it
always did: pydantic's result, or :class:`EventDecodeError` for what pydantic rejects.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from libs.events import Codec, EventDecodeError, Rate, ReadingRecorded, Route
from libs.events.acquisition import SwitchState
from libs.events.codec import _BATCH_PREFIX, BATCH_TYPE, _ReadingBatch
from libs.events.fastdecode import FastReading, FastReadingBatch, FastRoute, decode_reading_batch
from tests.events.strategies import model

# pydantic fields whose default factory cannot be mirrored (a fresh id, the current time): the
# mirror requires them, so a message without them falls back and pydantic makes them.
REQUIRED_IN_MIRROR = {"event_id", "time"}
MIRRORS = [(FastReading, ReadingRecorded), (FastRoute, Route), (FastReadingBatch, _ReadingBatch)]


def mirror_mismatches(struct: type[msgspec.Struct], pydantic_model: type[BaseModel]) -> list[str]:
    """How ``struct`` differs from ``pydantic_model``: field names, order and defaults."""
    found = []
    ours = {f.name: f for f in msgspec.structs.fields(struct)}
    theirs = pydantic_model.model_fields
    if list(ours) != list(theirs):
        found.append(f"fields {list(ours)} != {list(theirs)}")
    for name in ours.keys() & theirs.keys():
        field, info = ours[name], theirs[name]
        if info.default_factory is not None:
            if name in REQUIRED_IN_MIRROR:
                ok = field.required
            else:
                ok = field.default_factory is not msgspec.NODEFAULT and (
                    field.default_factory() == info.default_factory()  # type: ignore[call-arg]
                )
        elif info.default is PydanticUndefined:
            ok = field.required
        else:
            ok = field.default == info.default and type(field.default) is type(info.default)
        if not ok:
            found.append(f"{name}: default {field.default!r}/{field.default_factory!r} != {info!r}")
    return found


@pytest.mark.parametrize(("struct", "pydantic_model"), MIRRORS, ids=lambda c: c.__name__)
def test_mirrors_have_the_fields_and_defaults_of_the_models(
    struct: type[msgspec.Struct], pydantic_model: type[BaseModel]
) -> None:
    assert mirror_mismatches(struct, pydantic_model) == []


def test_a_mirror_out_of_sync_is_noticed() -> None:
    class Newer(ReadingRecorded):
        tamper_seen: bool = False

    class Changed(Route):
        failover: bool = True

    assert mirror_mismatches(FastReading, Newer) == [
        f"fields {[f.name for f in msgspec.structs.fields(FastReading)]} != {list(Newer.model_fields)}"
    ]
    assert [m.split(":")[0] for m in mirror_mismatches(FastRoute, Changed)] == ["failover"]


def assert_same(
    fast: list[ReadingRecorded], slow: list[ReadingRecorded] | tuple[ReadingRecorded, ...]
) -> None:
    assert len(fast) == len(slow)
    for ours, theirs in zip(fast, slow, strict=True):
        assert type(ours) is ReadingRecorded
        assert ours == theirs
        assert ours.model_dump_json() == theirs.model_dump_json()
        assert ours.route == theirs.route and type(ours.route) is Route
        assert ours.time.tzinfo is UTC  # Event's validator: UTC on every instance


@given(st.lists(model(ReadingRecorded), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_encoded_batches_take_the_fast_path_and_equal_pydantic(readings: list[ReadingRecorded]) -> None:
    value = Codec().encode_batch(readings, batch_id="b-1")
    fast = decode_reading_batch(value)
    assert fast is not None  # our own encoding never needs the fallback
    assert_same(fast, _ReadingBatch.model_validate_json(value).readings)
    assert_same(fast, readings)
    assert_same(Codec().decode(value), readings)  # type: ignore[arg-type]


# --- differential: any input, mutated from a valid batch ----------------------------------------


class Raw:
    """A JSON fragment written as is (a number no JSON library writes, a bare token)."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


DELETE = object()


def dump(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return b"{" + b",".join(dump(k) + b":" + dump(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()  # orjson writes 64-bit integers only
    return orjson.dumps(value)


def base_reading(n: int) -> dict[str, Any]:
    return {
        "event_id": f"r-{n}",
        "project_id": "p1",
        "subject_id": f"m{n}",
        "sequence": 3,
        "time": "2026-11-21T16:30:15.25+08:00",
        "causation_id": None,
        "correlation_id": "c-1",
        "meter_id": f"m{n}",
        "registers": {"active_import_kwh": {"total": "1652.93", "peak": "700.10"}, "volume_m3": {}},
        "instant": {"voltage_a_v": "220.1", "power_factor": "0.98"},
        "meter_time": "2026-11-21T16:30:00+08:00",
        "received_at": "2026-11-21T16:30:15.25+08:00",  # as `time`, which alone goes to UTC
        "route": {"concentrator_id": "c1", "bus_id": "b1", "via": ["c2"], "failover": True},
        "relay": "closed",
        "valve": None,
        "remaining_fen": -120,
        "purchase_count": 4,
        "frozen": None,
        "registers_since": "2026-11-20T09:00:00.5+08:00",
    }


def base_batch() -> dict[str, Any]:
    return {"type": BATCH_TYPE, "batch_id": "b-1", "readings": [base_reading(1), base_reading(2)]}


def mutated(path: tuple[Any, ...], new: Any) -> bytes:
    """The base batch with the value at ``path`` replaced by ``new`` (or deleted, or added)."""
    doc = base_batch()
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    if new is DELETE:
        del target[last]
    else:
        target[last] = new
    return dump(doc)


def check(value: bytes) -> list[ReadingRecorded] | None:
    """The invariant for one input; returns the fast path's answer (None: fell back)."""
    fast = decode_reading_batch(value)
    try:
        slow: list[ReadingRecorded] | BaseException = list(_ReadingBatch.model_validate_json(value).readings)
    except Exception as exc:  # ValidationError, and whatever else pydantic's path lets through
        slow = exc
    if fast is not None:
        assert isinstance(slow, list), f"fast path accepted what pydantic rejects: {slow}"
        assert_same(fast, slow)
    if not value.startswith(_BATCH_PREFIX):
        return fast  # Codec.decode takes its generic path: not this module's concern
    if isinstance(slow, ValidationError):
        with pytest.raises(EventDecodeError, match="reading_batch"):
            Codec().decode(value)
    elif isinstance(slow, BaseException):  # as before the fast path: pydantic's own exception
        with pytest.raises(type(slow)):
            Codec().decode(value)
    elif fast is None:  # fell back: Codec gives pydantic's readings (ids / times it made aside)
        volatile = {"event_id", "time"}
        assert [r.model_dump(exclude=volatile) for r in Codec().decode(value)] == [
            r.model_dump(exclude=volatile) for r in slow
        ]
    else:
        assert_same(Codec().decode(value), slow)  # type: ignore[arg-type]
    return fast


R = ("readings", 0)
FAST, FALLBACK = "fast", "fallback"
# (path, new value, expected): FAST = msgspec and pydantic agree; FALLBACK = msgspec refuses or
# would differ from pydantic (which then accepts leniently or rejects).
TABLE: list[tuple[tuple[Any, ...], Any, str]] = [
    # datetimes pydantic and the fast path (pydantic's own parser) read the same
    ((*R, "time"), "2026-11-21T08:30:15Z", FAST),
    ((*R, "time"), "2026-11-21T08:30:15+00:00", FAST),
    ((*R, "time"), "2026-11-21T08:30:15-00:00", FAST),
    ((*R, "time"), "2026-11-21T14:15:15+05:45", FAST),
    ((*R, "received_at"), "2026-11-21T14:15:15+05:45", FAST),
    ((*R, "received_at"), "2026-11-21T14:15:15.123456+0545", FAST),
    ((*R, "meter_time"), "2026-11-21t08:30:15z", FAST),
    ((*R, "meter_time"), "2026-11-21 08:30:15Z", FAST),
    ((*R, "meter_time"), "2026-11-21T08:30:15.123Z", FAST),
    ((*R, "meter_time"), "2026-11-21T08:30:15.1234567Z", FAST),  # msgspec rounds, pydantic truncates
    ((*R, "meter_time"), "2026-11-21T08:30:15.9999996Z", FAST),
    ((*R, "meter_time"), Raw(b'"2026-11-21T08:30:15.\\u00312345678Z"'), FAST),  # escaped digit
    ((*R, "meter_time"), "2026-11-21T08:30Z", FAST),  # msgspec refuses, pydantic accepts
    ((*R, "meter_time"), "2026-11-21T08:30:15,5Z", FAST),
    ((*R, "meter_time"), "1700000000", FAST),  # a unix time in a string: pydantic reads it
    ((*R, "meter_time"), None, FAST),
    ((*R, "registers_since"), None, FAST),
    ((*R, "registers_since"), DELETE, FAST),  # written before the field existed
    ((*R, "registers_since"), "2026-11-21T08:30:15.1234567Z", FAST),
    ((*R, "registers_since"), "2026-11-21T08:30:15", FALLBACK),  # naive
    ((*R, "registers_since"), Raw(b"1700000000"), FALLBACK),
    ((*R, "time"), "9999-12-31T23:59:59-01:00", FALLBACK),  # UTC overflows: a validation error
    ((*R, "time"), "0001-01-01T00:00:00+01:00", FALLBACK),
    ((*R, "received_at"), "9999-12-31T23:59:59-01:00", FAST),  # kept in its zone: fine
    ((*R, "time"), "2026-11-21T08:30:15", FALLBACK),  # naive
    ((*R, "received_at"), "2026-11-21T08:30:15", FALLBACK),
    ((*R, "meter_time"), "2026-11-21", FALLBACK),
    ((*R, "meter_time"), "2026-11-21T08:30:60Z", FALLBACK),
    ((*R, "meter_time"), "2026-02-30T08:30:15Z", FALLBACK),
    ((*R, "meter_time"), "2026-11-21T08:30:15+24:00", FALLBACK),
    ((*R, "meter_time"), Raw(b"1700000000"), FALLBACK),  # a number: only pydantic reads it
    ((*R, "time"), DELETE, FALLBACK),  # pydantic makes it (now)
    ((*R, "event_id"), DELETE, FALLBACK),  # pydantic makes it (a fresh id)
    # decimals
    ((*R, "registers", "active_import_kwh", "total"), "1e999", FAST),
    ((*R, "registers", "active_import_kwh", "total"), " 1.0 ", FAST),
    ((*R, "registers", "active_import_kwh", "total"), "1_000", FAST),
    ((*R, "registers", "active_import_kwh", "total"), "-0", FAST),
    ((*R, "registers", "active_import_kwh", "total"), "١٢", FAST),  # Arabic-Indic digits
    ((*R, "registers", "active_import_kwh", "total"), "1" * 5000, FAST),
    ((*R, "registers", "active_import_kwh", "total"), "1e99999999999999999999", FALLBACK),  # Decimal refuses
    ((*R, "registers", "active_import_kwh", "total"), Raw(b"1.10"), FALLBACK),  # pydantic: 1.1
    ((*R, "registers", "active_import_kwh", "total"), Raw(b"0.12345678901234567890123"), FALLBACK),
    ((*R, "registers", "active_import_kwh", "total"), Raw(b"-0.0"), FALLBACK),
    ((*R, "registers", "active_import_kwh", "total"), Raw(b"1e999"), FALLBACK),  # pydantic: inf, refused
    ((*R, "registers", "active_import_kwh", "total"), Raw(b"12"), FALLBACK),
    ((*R, "registers", "active_import_kwh", "total"), "NaN", FALLBACK),
    ((*R, "registers", "active_import_kwh", "total"), "sNaN", FALLBACK),
    ((*R, "instant", "power_factor"), "Infinity", FALLBACK),
    ((*R, "instant", "power_factor"), "-inf", FALLBACK),
    ((*R, "instant", "power_factor"), "", FALLBACK),
    ((*R, "instant", "power_factor"), "0x10", FALLBACK),
    ((*R, "instant", "power_factor"), None, FALLBACK),
    ((*R, "registers", "active_import_kwh", "flat"), "1", FAST),
    ((*R, "registers", "active_import_kwh", "offpeak"), "1", FALLBACK),  # unknown Rate
    ((*R, "registers", "active_import_kwh", "TOTAL"), "1", FALLBACK),
    ((*R, "registers"), DELETE, FAST),
    ((*R, "registers"), None, FALLBACK),
    ((*R, "instant"), [], FALLBACK),
    # ints
    ((*R, "sequence"), 0, FAST),
    ((*R, "sequence"), -1, FALLBACK),
    ((*R, "sequence"), Raw(b"18446744073709551616"), FAST),
    ((*R, "remaining_fen"), Raw(b"-99999999999999999999999"), FAST),
    ((*R, "remaining_fen"), Raw(b"9" * 5000), FALLBACK),  # past Python's int digit limit
    ((*R, "purchase_count"), -1, FALLBACK),
    ((*R, "purchase_count"), True, FALLBACK),  # pydantic (lax) reads 1
    ((*R, "purchase_count"), 2.0, FALLBACK),  # pydantic (lax) reads 2
    ((*R, "purchase_count"), 2.5, FALLBACK),
    ((*R, "purchase_count"), Raw(b"1e2"), FALLBACK),
    ((*R, "purchase_count"), "4", FALLBACK),
    ((*R, "sequence"), None, FALLBACK),
    ((*R, "sequence"), DELETE, FAST),
    # strings and ids
    ((*R, "event_id"), "", FALLBACK),
    ((*R, "event_id"), "e" * 64, FAST),
    ((*R, "event_id"), "e" * 65, FALLBACK),
    ((*R, "event_id"), "😀" * 64, FAST),  # lengths count characters, not bytes
    ((*R, "event_id"), "😀" * 65, FALLBACK),
    ((*R, "subject_id"), "s" * 128, FAST),
    ((*R, "subject_id"), "s" * 129, FALLBACK),
    ((*R, "project_id"), "", FALLBACK),
    ((*R, "project_id"), 5, FALLBACK),
    ((*R, "meter_id"), Raw(b'"a\\u0000\\ud83d\\ude00"'), FAST),
    ((*R, "meter_id"), Raw(b'"\\ud800"'), FALLBACK),  # lone surrogate
    ((*R, "meter_id"), None, FALLBACK),
    ((*R, "meter_id"), DELETE, FALLBACK),
    ((*R, "frozen"), "daily:2026-11-20", FAST),
    ((*R, "causation_id"), 7, FALLBACK),
    ((*R, "batch_id"), "x", FALLBACK),  # unknown field of a reading
    (("batch_id",), 7, FALLBACK),
    (("batch_id",), DELETE, FALLBACK),
    (("extra",), 1, FALLBACK),
    (("readings",), [], FAST),
    (("readings",), {}, FALLBACK),
    (("readings",), None, FALLBACK),
    # enums, bools, the route
    ((*R, "relay"), "open", FAST),
    ((*R, "relay"), "OPEN", FALLBACK),
    ((*R, "valve"), "unknown", FAST),
    ((*R, "valve"), 1, FALLBACK),
    ((*R, "route", "failover"), False, FAST),
    ((*R, "route", "failover"), "true", FALLBACK),
    ((*R, "route", "failover"), 1, FALLBACK),
    ((*R, "route", "failover"), DELETE, FAST),
    ((*R, "route", "via"), DELETE, FAST),
    ((*R, "route", "via"), [], FAST),
    ((*R, "route", "via"), "c2", FALLBACK),
    ((*R, "route", "via"), [1], FALLBACK),
    ((*R, "route", "bus_id"), DELETE, FALLBACK),
    ((*R, "route", "hops"), 2, FALLBACK),
    ((*R, "route"), None, FALLBACK),
    ((*R, "route"), DELETE, FALLBACK),
    ((*R, "unknown"), None, FALLBACK),
]


@pytest.mark.parametrize(("path", "new", "expected"), TABLE, ids=lambda x: repr(x)[:40])
def test_mutated_batches_decode_as_pydantic_does(path: tuple[Any, ...], new: Any, expected: str) -> None:
    fast = check(mutated(path, new))
    assert (FAST if fast is not None else FALLBACK) == expected


def _good() -> bytes:
    return dump(base_batch())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_good(), FAST),
        (_good() + b"  \n", FAST),
        (_good() + b"x", FALLBACK),
        (_good()[:-1], FALLBACK),
        (_good().replace(b'"p1"', b'"p\xff"', 1), FALLBACK),  # not UTF-8
        (_good().replace(b'"sequence":3', b'"sequence":3,"sequence":5', 1), FAST),  # last wins, both
        (_good().replace(b'"total":"1652.93"', b'"total":"1","peak":"2","total":"3"', 1), FAST),
        (_good().replace(b'"batch_id"', b'"type":"other","batch_id"', 1), FALLBACK),
        (_good().replace(b'"relay":"closed"', b'"relay":"\\u0063losed"', 1), FAST),
    ],
    ids=lambda x: repr(x)[-40:],
)
def test_raw_inputs_decode_as_pydantic_does(value: bytes, expected: str) -> None:
    fast = check(value)
    assert (FAST if fast is not None else FALLBACK) == expected


def test_shared_texts_and_routes_keep_their_own_meaning() -> None:
    (first, second) = decode_reading_batch(_good()) or []
    assert first.time == first.received_at and first.time.tzinfo is UTC
    assert first.received_at.utcoffset() == timedelta(hours=8)  # not moved to UTC
    assert first.route is second.route  # one frozen Route per batch, as equal values
    assert first.registers["active_import_kwh"] == {
        Rate.TOTAL: Decimal("1652.93"),
        Rate.PEAK: Decimal("700.10"),
    }
    assert str(first.registers["active_import_kwh"][Rate.PEAK]) == "700.10"
    assert first.relay is SwitchState.CLOSED


# Values for hypothesis to put anywhere: the kinds of things the table above tries, combined.
_DECIMALISH = st.text(alphabet="0123456789.+-eE_ \tnNaIifsy١", max_size=12)
_DATETIMEISH = st.builds(
    "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    st.integers(0, 10000), st.integers(0, 13), st.integers(0, 32), st.sampled_from("T t_"),
    st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
    st.sampled_from(["", ".", ".5", ".123456", ".1234567", ".9999999", ",5"]),
    st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+05:45", "+0545", "+05", "-23:59", "+24:00", "+05:45:30"]),
)  # fmt: skip
_TOKENS = st.sampled_from(
    [Raw(t) for t in (b"null", b"true", b"false", b"0", b"-1", b"1.0", b"1.5", b"1e2", b"1e999", b"-0.0",
                      b"18446744073709551616", b"-9223372036854775809", b'""', b"[]", b"{}", b'"x"')]
)  # fmt: skip
_VALUES = st.one_of(
    _TOKENS, _DECIMALISH, _DATETIMEISH, st.integers(), st.text(max_size=70), st.sampled_from(list(Rate)),
    st.sampled_from(list(SwitchState)), st.just(DELETE), st.lists(st.text(max_size=3), max_size=2),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
_FIELDS = list(base_reading(0))
_PATHS = st.one_of(
    st.tuples(st.just("readings"), st.integers(0, 1), st.sampled_from([*_FIELDS, "extra"])),
    st.tuples(st.just("readings"), st.integers(0, 1), st.just("route"),
              st.sampled_from(["concentrator_id", "bus_id", "via", "failover", "extra"])),
    st.tuples(st.just("readings"), st.integers(0, 1), st.just("registers"),
              st.sampled_from(["active_import_kwh", "volume_m3"]), st.sampled_from([*Rate, "other"])),
    st.tuples(st.just("readings"), st.integers(0, 1), st.just("instant"), st.sampled_from(["power_factor", "x"])),
    st.sampled_from([("batch_id",), ("extra",)]),
)  # fmt: skip


_TEXT = st.text(max_size=70)
_AWARE_TEXT = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])).map(
    datetime.isoformat
)
_DECIMAL_TEXT = st.decimals(allow_nan=False, allow_infinity=False).map(str)
# Values of the right kind for each field (half the draws), so that mutations often stay valid
# and the fast path's results get compared, not only its refusals.
_VALID: dict[str, st.SearchStrategy[Any]] = {
    "event_id": _TEXT, "project_id": _TEXT, "subject_id": st.text(max_size=130), "meter_id": _TEXT,
    "causation_id": st.none() | _TEXT, "correlation_id": st.none() | _TEXT, "frozen": st.none() | _TEXT,
    "concentrator_id": _TEXT, "bus_id": _TEXT, "batch_id": _TEXT, "via": st.lists(_TEXT, max_size=3),
    "sequence": st.integers(-1, 2**70), "remaining_fen": st.none() | st.integers(),
    "purchase_count": st.none() | st.integers(-1, 2**70), "failover": st.booleans(),
    "time": _AWARE_TEXT, "received_at": _AWARE_TEXT, "meter_time": st.none() | _AWARE_TEXT,
    "relay": st.none() | st.sampled_from(list(SwitchState)), "valve": st.none() | st.sampled_from(list(SwitchState)),
    "power_factor": _DECIMAL_TEXT, "x": _DECIMAL_TEXT, **{rate: _DECIMAL_TEXT for rate in [*Rate, "other"]},
}  # fmt: skip
_MUTATIONS = _PATHS.flatmap(lambda path: st.tuples(st.just(path), _VALUES | _VALID.get(path[-1], _VALUES)))


@given(st.lists(_MUTATIONS, min_size=1, max_size=3))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_randomly_mutated_batches_decode_as_pydantic_does(
    mutations: list[tuple[tuple[Any, ...], Any]],
) -> None:
    doc = base_batch()
    for path, new in mutations:
        *parents, last = path
        target: Any = doc
        for key in parents:
            if not (
                (isinstance(target, dict) and key in target)
                or (isinstance(target, list) and isinstance(key, int) and 0 <= key < len(target))
            ):
                break  # an earlier mutation replaced or removed what the path goes through
            target = target[key]
        else:
            if isinstance(target, dict):
                if new is DELETE:
                    target.pop(last, None)
                else:
                    target[last] = new
    event("fast path" if check(dump(doc)) is not None else "fell back")


@given(_DECIMALISH)
@settings(max_examples=400, deadline=None)
def test_decimal_texts_decode_as_pydantic_does(text: str) -> None:
    event("fast path" if check(mutated((*R, "instant", "power_factor"), text)) else "fell back")


@given(_DATETIMEISH, st.sampled_from(["time", "received_at", "meter_time"]))
@settings(max_examples=400, deadline=None)
def test_datetime_texts_decode_as_pydantic_does(text: str, field: str) -> None:
    event("fast path" if check(mutated((*R, field), text)) else "fell back")


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45))])))
@settings(max_examples=200, deadline=None)
def test_any_aware_datetime_takes_the_fast_path(when: datetime) -> None:
    fast = check(mutated((*R, "received_at"), when.isoformat()))
    assert fast is not None and fast[0].received_at == when


def test_a_time_that_overflows_in_utc_is_a_decode_error_not_a_crash() -> None:
    with pytest.raises(EventDecodeError, match="out of range once moved to UTC"):
        Codec().decode(mutated((*R, "time"), "9999-12-31T23:59:59-01:00"))
