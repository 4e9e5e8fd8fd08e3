"""Building event models without re-validating them, for hot paths, checked under test.

pydantic validates every field whenever a model is built (~5–8 µs for an event with a nested
model), even when the values are already exactly what validation would make of them: a
reading the codec has validated with msgspec, or a charge billing computed from validated
facts. :func:`trusted` builds such an instance directly (~1 µs), as ``model_construct`` does
but without its per-field Python loop.

The values must be the declared types with their constraints met and ``time`` in UTC, as
validation would leave them. So that a mistake cannot hide: when ``MF_EVENTS_CHECK_TRUSTED`` is
set (the test suite sets it, and its subprocesses inherit it), every call also validates the
fields the normal way and raises :class:`UntrustedFields` unless both instances are equal and
serialise to the same JSON.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

M = TypeVar("M", bound=BaseModel)
CHECK = os.environ.get("MF_EVENTS_CHECK_TRUSTED", "") not in ("", "0")
_set = object.__setattr__
_MISSING = object()
_fields: dict[type[BaseModel], tuple[tuple[str, Any], ...]] = {}


class UntrustedFields(AssertionError):
    """(Checking mode) the fields given to :func:`trusted` are not what validation makes of them."""


def _declared(cls: type[BaseModel]) -> tuple[tuple[str, Any], ...]:
    """(name, static default or _MISSING) of every field, in declaration order."""
    found = _fields.get(cls)
    if found is None:
        found = _fields[cls] = tuple(
            (name, _MISSING if info.default is PydanticUndefined or info.default_factory else info.default)
            for name, info in cls.model_fields.items()
        )
    return found


def trusted(cls: type[M], fields: dict[str, Any]) -> M:
    """An instance of ``cls`` holding ``fields`` (plus its static defaults), not validated.

    Fields with a default factory (``event_id``, ``time`` of events) must be given. Nested
    models must be instances already (built with :func:`trusted` too, or validated). JSON
    follows the order of the instance's fields: given all of them, in declaration order, the
    dict itself is kept (the fastest; the caller must not change it afterwards); given fewer, a
    copy in declaration order is made with the defaults filled in.
    """
    declared = _declared(cls)
    if len(fields) == len(declared):
        values = fields
    else:
        values = {name: fields.get(name, default) for name, default in declared}
    obj = cls.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    if CHECK:
        checked = cls.model_validate(fields)
        built = obj.model_dump_json(warnings=False)  # a wrong type is reported below, not warned
        if checked != obj or checked.model_dump_json() != built:
            raise UntrustedFields(
                f"{cls.__name__}: validation gives {checked.model_dump_json()}, trusted() built {built}"
            )
    return obj
