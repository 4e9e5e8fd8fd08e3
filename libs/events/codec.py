"""Bytes on the wire ⇄ events, with upcasting, unknown-type skipping and batched readings.

Wire format: one JSON object per Kafka message, ``{"type": "<subsystem>.vN.<name>", …fields}``.
High-volume readings also travel packed: ``{"type": "acquisition.v1.reading_batch",
"readings": [<reading_recorded>, …]}`` — each reading keeps its own event id, and every meter in
one batch maps to the partition the batch is written to, the same partition a single message
keyed by that meter id would go to (Kafka's default murmur2 partitioner). Any other facts may
travel packed too: ``{"type": "meterflow.v1.event_batch", "events": [<event with its type>, …]}``
(stream processors pack their outputs per partition this way, see :func:`pack_events`). Consumers
call :meth:`Codec.decode`, which returns a list for every form, so they never care which arrived.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from kafka.partitioner.default import murmur2
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

# Importing the fact modules registers them.
from libs.events import acquisition, billing, control, notify  # noqa: F401
from libs.events.acquisition import ReadingRecorded
from libs.events.base import REGISTRY, Event, EventRegistry, new_event_id
from libs.events.fastdecode import decode_reading_batch

BATCH_TYPE = "acquisition.v1.reading_batch"
EVENT_BATCH_TYPE = "meterflow.v1.event_batch"
_BATCH_PREFIX = b'{"type":"' + BATCH_TYPE.encode() + b'"'
_READINGS = TypeAdapter(list[ReadingRecorded])
_TYPE_PREFIX: dict[type[Event], bytes] = {}  # b'{"type":"<type name>",' per event class


class _ReadingBatch(BaseModel):
    """The packed form: many readings, each with its own event id, in one message."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["acquisition.v1.reading_batch"]
    batch_id: str
    readings: tuple[ReadingRecorded, ...]


class EventDecodeError(ValueError):
    """A message that is not a valid event: not JSON, no type, or fields that fail validation.

    Unknown *types* are not errors (they are counted and skipped); a known type with a bad
    payload is, so that the consumer can dead-letter it instead of losing it.
    """


def _batch(readings_json: bytes, batch_id: str | None) -> bytes:
    head = b'{"type":"' + BATCH_TYPE.encode() + b'","batch_id":"' + (batch_id or new_event_id()).encode()
    return head + b'","readings":' + readings_json + b"}"


@functools.lru_cache(maxsize=65536)  # subjects repeat: a meter's or account's key every event
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, kafka-python, aiokafka) picks for a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class PackedMessage:
    """One Kafka message carrying several readings of meters that share a partition."""

    partition: int
    key: bytes
    value: bytes
    count: int


@dataclass
class Codec:
    """Encodes and decodes events for one registry; counts what it skipped."""

    registry: EventRegistry = field(default_factory=lambda: REGISTRY)
    skipped: Counter[str] = field(default_factory=Counter)

    def encode(self, event: Event) -> bytes:
        """One event as the JSON bytes of a Kafka message value."""
        prefix = _TYPE_PREFIX.get(type(event))
        if prefix is None:
            if not event.TYPE:
                raise TypeError(f"{type(event).__name__} is not a registered event type")
            prefix = _TYPE_PREFIX[type(event)] = b'{"type":"' + event.TYPE.encode() + b'",'
        # model_dump_json() without the str round trip: the serializer's own bytes
        body = event.__pydantic_serializer__.to_json(event)
        return prefix + body[1:] if body != b"{}" else body

    def encode_batch(self, readings: Sequence[ReadingRecorded], batch_id: str | None = None) -> bytes:
        """Several readings as one message value (see :func:`pack_readings` for partitioning).

        The items carry no ``type`` of their own: the batch type implies it, and the whole
        message then validates in one pass of pydantic's JSON parser.
        """
        return _batch(_READINGS.dump_json(list(readings)), batch_id)

    def encode_batch_items(self, items: Sequence[bytes], batch_id: str | None = None) -> bytes:
        """A batch from readings already serialised with ``model_dump_json()`` (no ``type``)."""
        return _batch(b"[" + b",".join(items) + b"]", batch_id)

    def encode_events(self, events: Sequence[Event], batch_id: str | None = None) -> bytes:
        """Several events of any types as one message value (see :func:`pack_events`)."""
        head = (
            b'{"type":"'
            + EVENT_BATCH_TYPE.encode()
            + b'","batch_id":"'
            + (batch_id or new_event_id()).encode()
        )
        return head + b'","events":[' + b",".join(self.encode(e) for e in events) + b"]}"

    def decode(self, value: bytes, ignore: frozenset[str] = frozenset()) -> list[Event]:
        """All events in one message value: one, several (a batch) or none (an unknown type).

        Events whose wire type is in ``ignore`` are dropped before validation (a consumer's own
        outputs on a topic it reads, say): cheap to skip, and never counted as unknown.
        """
        if value.startswith(_BATCH_PREFIX):
            if BATCH_TYPE in ignore or ReadingRecorded.TYPE in ignore:
                return []  # our own batches: one pass of the Rust JSON parser
            fast = decode_reading_batch(value)
            if fast is not None:
                return list(fast)
            try:  # what msgspec refused or left to pydantic: accepted leniently or the proper error
                return list(_ReadingBatch.model_validate_json(value).readings)
            except ValidationError as exc:
                raise EventDecodeError(f"{BATCH_TYPE}: {exc}") from None
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EventDecodeError(f"message is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            raise EventDecodeError("message has no string 'type' field")
        if doc["type"] == EVENT_BATCH_TYPE:
            items = doc.get("events")
            if not isinstance(items, list):
                raise EventDecodeError(f"{EVENT_BATCH_TYPE}: 'events' is not a list")
            return [
                event
                for item in items
                if not (ignore and isinstance(item, dict) and item.get("type") in ignore)
                for event in self._one(item)
            ]
        if doc["type"] in ignore:
            return []
        if doc["type"] == BATCH_TYPE:
            try:
                return list(_ReadingBatch.model_validate(doc).readings)
            except ValidationError as exc:
                raise EventDecodeError(f"{BATCH_TYPE}: {exc}") from None
        return self._one(doc)

    def _one(self, doc: Any) -> list[Event]:
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
            raise EventDecodeError("event has no string 'type' field")
        payload = dict(doc)
        type_name = payload.pop("type")
        resolved = self.registry.resolve(type_name, payload)
        if resolved is None:
            self.skipped[type_name] += 1
            return []
        cls, payload = resolved
        try:
            return [cls.model_validate(payload)]
        except ValidationError as exc:
            raise EventDecodeError(f"{type_name}: {exc}") from None


def pack_readings(
    readings: Iterable[ReadingRecorded],
    partitions: int,
    max_per_message: int = 500,
    codec: Codec | None = None,
) -> list[PackedMessage]:
    """Group readings by their meter's partition into messages of at most ``max_per_message``.

    Within a partition the readings keep their input order, so per-meter order survives.
    """
    codec = codec or Codec()
    by_partition: dict[int, list[ReadingRecorded]] = {}
    for reading in readings:
        by_partition.setdefault(partition_for(reading.key, partitions), []).append(reading)
    messages = []
    for partition, items in sorted(by_partition.items()):
        for start in range(0, len(items), max_per_message):
            chunk = items[start : start + max_per_message]
            messages.append(PackedMessage(partition, chunk[0].key, codec.encode_batch(chunk), len(chunk)))
    return messages


def pack_events(
    events: Iterable[Event],
    partitions: Callable[[str], int],
    max_per_message: int = 500,
    codec: Codec | None = None,
) -> list[tuple[str, PackedMessage]]:
    """Group events by (topic, the partition their key maps to) into batch messages.

    ``partitions(topic)`` gives a topic's partition count. Each subject's events keep their
    order (one partition, in input order), exactly as if each had been sent alone with its key.
    """
    codec = codec or Codec()
    groups: dict[tuple[str, int], list[Event]] = {}
    for event in events:
        topic = event.TOPIC
        groups.setdefault((topic, partition_for(event.key, partitions(topic))), []).append(event)
    out = []
    for (topic, partition), items in groups.items():
        for start in range(0, len(items), max_per_message):
            chunk = items[start : start + max_per_message]
            out.append(
                (topic, PackedMessage(partition, chunk[0].key, codec.encode_events(chunk), len(chunk)))
            )
    return out
