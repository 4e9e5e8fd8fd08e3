"""Faults on demand: what can go wrong between the platform and a meter.

Link faults act on the bytes a bus sends back, like pymodbus ``NullModem.set_manipulator``: a
:class:`LinkFault` turns one reply into the chunks that reach the client (corrupted, split with
a pause, delayed, dropped). Meter and concentrator faults (offline, dead, rollover, replaced,
clock drift) are applied by :class:`libs.protocols.simulator.runtime.Site` through its API and
its JSON-lines control port (:mod:`libs.protocols.simulator.control`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LinkFaultKind = Literal["corrupt", "split", "delay", "drop"]


@dataclass
class Chunk:
    """Bytes to put on the wire after waiting ``pause`` seconds."""

    pause: float
    data: bytes


@dataclass
class LinkFault:
    """A manipulation of the reply bytes of one bus.

    - ``corrupt``: XOR byte ``index`` (negative counts from the end) with ``mask``;
    - ``split``: cut the reply at ``index`` and pause ``seconds`` before the rest;
    - ``delay``: wait ``seconds`` more before the reply;
    - ``drop``: the reply never arrives.

    ``count`` is how many replies it applies to (``None``: until cleared).
    """

    kind: LinkFaultKind
    index: int = -2
    mask: int = 0x01
    seconds: float = 0.2
    count: int | None = None

    def apply(self, data: bytes) -> list[Chunk]:
        """Return the chunks that reach the client in place of ``data``."""
        if not data:
            return []
        if self.kind == "drop":
            return []
        if self.kind == "delay":
            return [Chunk(self.seconds, data)]
        index = self.index if self.index >= 0 else len(data) + self.index
        index = max(0, min(index, len(data) - 1))
        if self.kind == "corrupt":
            mutated = bytearray(data)
            mutated[index] ^= self.mask or 0x01
            return [Chunk(0.0, bytes(mutated))]
        cut = max(1, index)
        return [Chunk(0.0, data[:cut]), Chunk(self.seconds, data[cut:])]

    def use(self) -> bool:
        """Count one use; return False once the fault is spent."""
        if self.count is None:
            return True
        if self.count <= 0:
            return False
        self.count -= 1
        return True
