"""The event envelope shared by every fact, and the registry of event types.

Every fact is one frozen pydantic model whose class carries its versioned type name
``<subsystem>.v<N>.<name>`` (e.g. ``billing.v1.recharge_accepted``) and the topic it lives on.
The envelope fields sit on the model itself, so a consumer holds one object per event:

- ``event_id``: unique id; consumers remember applied ids (idempotency). Use
  :func:`event_id_for` to derive it from a natural key (a recharge's idempotency key) so that a
  retried request yields the same id and is applied once.
- ``project_id``: the tenant; ``subject_id``: the aggregate the fact is about (meter, account…);
  it is also the Kafka key, so one subject's events stay ordered on one partition.
- ``sequence``: per-subject sequence assigned by the producer (0 = the producer keeps none).
- ``time``: when the fact happened (timezone-aware, UTC on the wire).
- ``causation_id`` / ``correlation_id``: the event that caused this one, and the id shared by
  every event of one business flow (a recharge → balance change → restore command …).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

_NAMESPACE = uuid.UUID("6f6d6574-6572-666c-6f77-000000000001")
_NAMESPACE_BYTES = _NAMESPACE.bytes


def new_event_id() -> str:
    """A fresh random event id (UUID4, hex with dashes)."""
    return str(uuid.uuid4())


def event_id_for(*parts: str) -> str:
    """A deterministic event id from a natural key, e.g. ``("proj-1", "recharge", key)``.

    The same parts always give the same id, so a retried command deduplicates downstream.
    """
    # uuid.uuid5 computed by hand (3x faster; billing derives ids on its hot path): SHA-1 of
    # namespace + name, first 16 bytes, version 5 and the RFC 4122 variant. Tests pin equality.
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every fact; subclasses are registered with :meth:`EventRegistry.register`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str] = ""
    TOPIC: ClassVar[str] = ""

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    project_id: str = Field(min_length=1, max_length=64)
    subject_id: str = Field(min_length=1, max_length=128)
    sequence: int = Field(default=0, ge=0)
    time: AwareDatetime = Field(default_factory=utcnow)
    causation_id: str | None = None
    correlation_id: str | None = None

    @field_validator("time")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59-01:00: a validation error, not a crash
            raise ValueError("time is out of range once moved to UTC") from None

    @property
    def key(self) -> bytes:
        """The Kafka message key: the subject id."""
        return self.subject_id.encode()


E = TypeVar("E", bound=type[Event])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class TypeName:
    """A parsed versioned type name ``subsystem.vN.name``."""

    subsystem: str
    version: int
    name: str

    @classmethod
    def parse(cls, text: str) -> TypeName:
        """Parse ``billing.v1.recharge_accepted``; ValueError for anything else."""
        parts = text.split(".")
        if len(parts) != 3 or not parts[1].startswith("v") or not parts[1][1:].isdigit():
            raise ValueError(f"event type {text!r} is not of the form subsystem.vN.name")
        return cls(parts[0], int(parts[1][1:]), parts[2])

    def __str__(self) -> str:
        return f"{self.subsystem}.v{self.version}.{self.name}"

    @property
    def family(self) -> tuple[str, str]:
        """(subsystem, name): the type across all its versions."""
        return (self.subsystem, self.name)


@dataclass
class EventRegistry:
    """Maps type names to the current model of each fact and the upcasters of older versions."""

    current: dict[tuple[str, str], tuple[int, type[Event]]] = field(default_factory=dict)
    upcasters: dict[tuple[str, str, int], Upcaster] = field(default_factory=dict)

    def register(self, type_name: str, topic: str) -> Callable[[E], E]:
        """Class decorator: make ``cls`` the current version of ``type_name`` on ``topic``."""
        parsed = TypeName.parse(type_name)

        def decorate(cls: E) -> E:
            known = self.current.get(parsed.family)
            if known is not None and known[0] >= parsed.version:
                raise ValueError(f"{type_name}: version {known[0]} already registered")
            cls.TYPE = type_name
            cls.TOPIC = topic
            self.current[parsed.family] = (parsed.version, cls)
            return cls

        return decorate

    def upcaster(self, type_name: str) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn(payload_of_vN) -> payload_of_vN+1`` for the version named."""
        parsed = TypeName.parse(type_name)

        def decorate(fn: Upcaster) -> Upcaster:
            self.upcasters[(parsed.subsystem, parsed.name, parsed.version)] = fn
            return fn

        return decorate

    def resolve(self, type_name: str, payload: dict[str, Any]) -> tuple[type[Event], dict[str, Any]] | None:
        """The current model for ``type_name`` and the payload upcast to it; None if unknown.

        A payload newer than the registered model is unknown too: an old consumer cannot
        read a newer producer's fact safely, so it counts and skips it.
        """
        try:
            parsed = TypeName.parse(type_name)
        except ValueError:
            return None
        known = self.current.get(parsed.family)
        if known is None or parsed.version > known[0]:
            return None
        version, cls = known
        for v in range(parsed.version, version):
            step = self.upcasters.get((parsed.subsystem, parsed.name, v))
            if step is None:
                return None
            payload = step(payload)
        return cls, payload

    def types(self) -> list[type[Event]]:
        """Every registered current model."""
        return [cls for _, cls in self.current.values()]


REGISTRY = EventRegistry()
event = REGISTRY.register
upcaster = REGISTRY.upcaster
