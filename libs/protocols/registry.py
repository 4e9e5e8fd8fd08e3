"""Which codec module speaks which protocol, for tools that take a protocol by name.

Every module named here exposes:

- ``decode(buf: bytes) -> tuple[int, Frame | None]`` — sans-IO: ``(consumed, frame)`` when a
  whole frame was parsed (garbage and preambles before it are included in ``consumed``),
  ``(consumed, None)`` when more bytes are needed (``consumed`` may be > 0 when leading garbage
  was skipped), and :class:`libs.protocols.errors.FrameError` for a bad frame;
- ``describe(frame) -> dict`` — the JSON view printed by ``meterflow frame decode``: keys
  ``protocol``, ``address`` (display order), ``control`` (hex string), ``reply``, ``error``,
  ``error_code``, ``di`` (display order), ``values`` (``{name: {"value": ..., "unit": ...}}``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

PROTOCOL_MODULES: dict[str, str] = {
    "dlt645-2007": "libs.protocols.dlt645",
    "dlt645-1997": "libs.protocols.dlt645_1997",
    "cjt188": "libs.protocols.cjt188",
    "modbus-rtu": "libs.protocols.modbus",
    "mbus": "libs.protocols.mbus",
}


def codec(protocol: str) -> ModuleType:
    """Return the codec module for a protocol name; KeyError names the known ones."""
    try:
        return importlib.import_module(PROTOCOL_MODULES[protocol])
    except KeyError:
        raise KeyError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOL_MODULES)}") from None
