"""Feed a sans-IO decoder the same bytes in every way the wire can deliver them.

Usage: ``assert_decodes(decode, frame_bytes)`` returns the frame decoded from the whole
buffer after checking that one-byte-at-a-time feeding, every two-way split and garbage
before/after all give the same frame and consume exactly the frame's bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Decode = Callable[[bytes], tuple[int, Any]]


def feed(decode: Decode, chunks: list[bytes]) -> tuple[list[Any], bytes]:
    """Feed chunks into a buffer as a reader would; return frames found and leftover bytes."""
    buf = b""
    frames: list[Any] = []
    for chunk in chunks:
        buf += chunk
        while buf:
            consumed, frame = decode(buf)
            buf = buf[consumed:]
            if frame is None:
                break
            frames.append(frame)
    return frames, buf


def assert_decodes(decode: Decode, wire: bytes, garbage: bytes = b"\x00\x13\x37") -> Any:
    """Check every delivery pattern of ``wire`` yields one identical frame; return it."""
    consumed, whole = decode(wire)
    assert whole is not None, "whole frame not decoded"
    assert consumed == len(wire), f"consumed {consumed} of {len(wire)}"
    frames, rest = feed(decode, [wire[i : i + 1] for i in range(len(wire))])
    assert frames == [whole] and rest == b"", "byte-at-a-time feeding differs"
    for cut in range(1, len(wire)):
        frames, rest = feed(decode, [wire[:cut], wire[cut:]])
        assert frames == [whole] and rest == b"", f"split at offset {cut} differs"
    frames, rest = feed(decode, [garbage + wire + wire])
    assert frames == [whole, whole], "garbage before or back-to-back frames not handled"
    return whole
