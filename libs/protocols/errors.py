"""The one error every meter-protocol codec raises for bad input."""

from __future__ import annotations


class FrameError(ValueError):
    """A frame that cannot be accepted, with the fault named.

    `fault` is a short machine-readable name (``checksum``, ``length``, ``terminator``,
    ``start``, ``control``, ``data``, ``address``, ``function``, ``crc`` …); the message says what
    was expected and what was found, e.g. ``dlt645-2007: checksum expected 0x5A, got 0x5B``.
    """

    def __init__(self, protocol: str, fault: str, detail: str) -> None:
        self.protocol = protocol
        self.fault = fault
        self.detail = detail
        super().__init__(f"{protocol}: {fault}: {detail}")
