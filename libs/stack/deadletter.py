"""Dead letters: what a processor parks on ``mf.dead-letter``, and what those records say.

A stream processor parks there every input it could not fold — a record that does not decode,
or one fact whose fold raised — and goes on with the rest (:mod:`libs.stack.processor`). A dead
letter keeps the original key and value (for a packed record, the one failing event encoded
alone) and says in its headers where it came from and why:

=============  ==================================================================================
``reason``     the error text (at most 500 bytes)
``source``     ``topic[partition]@offset`` of the input record (kept from the first version)
``service``    the processor that parked it (``billing``, ``control``, ``notify``, …)
``topic``      the input topic, ``partition`` and ``offset`` its place there: a retry re-publishes
               the value to that topic and partition. A fact that *waited* in the state before
               its fold raised has no known place: no ``partition`` / ``offset`` (a retry lets the
               producer's partitioner place it by key) and ``released_by`` names the record
               whose fact released it
``error_type`` the exception's class (``EventDecodeError`` for an undecodable record)
``at``         when it was parked (ISO 8601, UTC)
=============  ==================================================================================

notify's sender parks requests no channel delivered with ``reason``, ``attempts`` and
``source: notify`` only; they are listed (service ``notify``) but have no topic to retry to.

``meterflow dead-letter retry`` re-publishes a letter and then records that it did: a record with
an empty value and a ``retried_of`` header holding the letter's offset, which :func:`fold` reads
back, so a letter shows as retried and ``retry --all`` skips it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from libs.events.base import Event
from libs.events.codec import Codec
from libs.events.topics import DEAD_LETTER

if TYPE_CHECKING:
    from libs.stack.processor import Inbound, ProcessorStats

log = logging.getLogger(__name__)
Headers = list[tuple[str, bytes]]
REASON_BYTES = 500


@dataclass(frozen=True)
class Rejected:
    """One fact whose fold raised: the processor dead-letters it and the fold goes on.

    ``record`` is the input record being handled; ``waited``: the fact had waited in the state
    and was released by a fact of ``record`` (it came from an earlier record, place unknown)."""

    record: Inbound
    event: Event
    reason: str
    error_type: str
    waited: bool = False


def reject(
    into: list[Rejected], record: Inbound, event: Event, error: Exception, waited: bool = False
) -> None:
    """Log ``error`` with its traceback and append the fact to ``into`` (a handler's ``rejected``)."""
    log.warning(
        "%s[%d]@%d: %s %s rejected%s",
        record.topic, record.partition, record.offset, event.TYPE, event.event_id,
        " (released from waiting)" if waited else "", exc_info=error,
    )  # fmt: skip
    into.append(Rejected(record, event, str(error) or repr(error), type(error).__name__, waited))


class Place(Protocol):
    """Where an input record is: a raw record or an :class:`Inbound`."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class Parking:
    """A processor's dead letters, queued while a slice is handled and sent before its outputs."""

    def __init__(self, service: str, codec: Codec, stats: ProcessorStats) -> None:
        self.service, self.codec, self.stats = service, codec, stats
        self.queued: list[tuple[bytes | None, bytes, Headers]] = []

    def reject(self, r: Rejected, values: dict[tuple[str, int, int], bytes]) -> None:
        """Queue one fact whose fold raised (``values``: the slice's records by their place): the
        record's own bytes when it held that fact alone, else the fact encoded alone (a retry
        re-drives it, not its whole packed batch)."""
        rec = r.record
        if r.waited:  # from an earlier record, whose place the state did not keep
            place = f"{rec.topic}[{rec.partition}]@{rec.offset}"
            value = self.codec.encode(r.event)
            topic = type(r.event).TOPIC or rec.topic
            self.add(None, r.event.key, value, r.reason, r.error_type, topic, place)
            return
        original = values.get((rec.topic, rec.partition, rec.offset))
        value = original if original is not None and len(rec.events) == 1 else self.codec.encode(r.event)
        self.add(rec, rec.key, value, r.reason, r.error_type)

    def add(
        self,
        at: Place | None,
        key: bytes | None,
        value: bytes,
        reason: str,
        error_type: str,
        topic: str = "",
        released_by: str | None = None,
    ) -> None:
        """Queue a dead letter: ``at`` the input record's place, or None for a fact that waited
        in the state (``topic`` its own topic, ``released_by`` where the fact that released it
        came from)."""
        self.stats.dead_letters += 1
        topic = at.topic if at is not None else topic
        partition, offset = (at.partition, at.offset) if at is not None else (None, None)
        log.error("%s: %s[%s]@%s dead-lettered: %s", self.service, topic, partition, offset, reason)
        hs = headers(self.service, topic, partition, offset, reason, error_type, released_by=released_by)
        self.queued.append((key, value, hs))

    async def send(self, producer: Any) -> None:
        """Send what is queued with a Faust producer (awaited: a snapshot after it includes them)."""
        queued, self.queued = self.queued, []
        for key, value, hs in queued:
            await producer.send(DEAD_LETTER.name, key, value, None, None, hs)


def headers(
    service: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    reason: str,
    error_type: str,
    at: datetime | None = None,
    released_by: str | None = None,
) -> Headers:
    """The headers of a dead letter (see the module doc)."""
    at = at or datetime.now(UTC)
    place = f"{topic}[{partition}]@{offset}" if partition is not None and offset is not None else topic
    out: Headers = [
        ("reason", reason.encode()[:REASON_BYTES]),
        ("source", (place if released_by is None else f"{topic} (released by {released_by})").encode()),
        ("service", service.encode()),
        ("topic", topic.encode()),
    ]
    if partition is not None and offset is not None:
        out += [("partition", str(partition).encode()), ("offset", str(offset).encode())]
    if released_by is not None:
        out.append(("released_by", released_by.encode()))
    return [*out, ("error_type", error_type.encode()), ("at", at.isoformat().encode())]


def retry_marker(letter: DeadLetter, at: datetime | None = None) -> Headers:
    """The headers of the record that says ``letter`` was retried."""
    at = at or datetime.now(UTC)
    return [
        ("retried_of", str(letter.id).encode()),
        ("service", letter.service.encode()),
        ("at", at.isoformat().encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: ``id`` is its offset on mf.dead-letter."""

    id: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    retried: bool = False

    @property
    def service(self) -> str:
        """The service that parked it (notify's sender sets only ``source: notify``)."""
        return self.headers.get("service") or (
            "notify" if self.headers.get("source") == "notify" else "unknown"
        )

    @property
    def topic(self) -> str | None:
        """The input topic a retry goes to; None for a letter with no place (the sender's)."""
        return self.headers.get("topic") or None

    @property
    def partition(self) -> int | None:
        """The input partition a retry goes to (None: the partitioner places it by key)."""
        text = self.headers.get("partition", "")
        return int(text) if text.lstrip("-").isdigit() else None

    def summary(self) -> dict[str, object]:
        """What `meterflow dead-letter list` prints of it."""
        h = self.headers
        return {
            "id": self.id,
            "service": self.service,
            "source": h.get("source", ""),
            "reason": h.get("reason", ""),
            "error_type": h.get("error_type", ""),
            "at": h.get("at", ""),
            "retried": self.retried,
        }


def decode_headers(raw: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Kafka headers as text (the last of a repeated name wins)."""
    return {name: value.decode("utf-8", "replace") for name, value in raw or ()}


def fold(records: Iterable[tuple[int, bytes | None, bytes | None, dict[str, str]]]) -> list[DeadLetter]:
    """The dead letters among ``(offset, key, value, headers)`` records of mf.dead-letter, in order,
    each marked retried when a later record says so (retry markers are not letters)."""
    letters: list[DeadLetter] = []
    retried: set[int] = set()
    for offset, key, value, hs in records:
        marker = hs.get("retried_of", "")
        if marker:
            if marker.isdigit():
                retried.add(int(marker))
            continue
        letters.append(DeadLetter(offset, key, value or b"", hs))
    return [
        DeadLetter(le.id, le.key, le.value, le.headers, True) if le.id in retried else le for le in letters
    ]


def counts(letters: Iterable[DeadLetter]) -> dict[str, dict[str, int]]:
    """Per service: how many letters, and how many of them not retried."""
    out: dict[str, dict[str, int]] = {}
    for letter in letters:
        entry = out.setdefault(letter.service, {"dead_letters": 0, "not_retried": 0})
        entry["dead_letters"] += 1
        entry["not_retried"] += not letter.retried
    return out


def to_retry(
    letters: Sequence[DeadLetter], ids: Sequence[int], every: bool, service: str | None
) -> tuple[list[DeadLetter], list[int]]:
    """(letters to re-publish, ids that name no letter). ``every``: all not yet retried (of
    ``service``, if given) that have a topic; otherwise exactly ``ids``, retried before or not."""
    by_id = {le.id: le for le in letters}
    if every:
        chosen = [
            le for le in letters if not le.retried and le.topic and (service is None or le.service == service)
        ]
        return chosen, []
    return [by_id[i] for i in ids if i in by_id], [i for i in ids if i not in by_id]
