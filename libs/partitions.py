"""``MF_PARTITIONS_MAX``: the cap on every topic's partition count (libs/events/topics.py).

Apart from the topic catalogue so the command line can import it (and report a bad value)
without building the catalogue, which reads the setting at import.
"""

from __future__ import annotations


class PartitionsSettingError(ValueError):
    """``MF_PARTITIONS_MAX`` is not a whole number."""


def partitions_max(raw: str | None) -> int:
    """The cap named by ``MF_PARTITIONS_MAX`` (0: none); anything but a whole number ≥ 0 is refused."""
    text = (raw or "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise PartitionsSettingError(
            f"MF_PARTITIONS_MAX must be a whole number of partitions (0 = no cap), not {raw!r}"
        )
    return int(text)
