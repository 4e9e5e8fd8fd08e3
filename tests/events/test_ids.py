"""Derived event ids are exactly RFC 4122 UUIDv5 (ids already in the log must not change)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from libs.events.base import _NAMESPACE, event_id_for


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_event_id_for_is_uuid5_of_the_joined_parts(parts: list[str]) -> None:
    assert event_id_for(*parts) == str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def test_a_known_id_stays_the_same() -> None:
    assert event_id_for("proj-1", "recharge", "k1") == str(
        uuid.uuid5(uuid.UUID("6f6d6574-6572-666c-6f77-000000000001"), "proj-1\x1frecharge\x1fk1")
    )
