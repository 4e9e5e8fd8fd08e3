"""Snapshot files of a processor, and states pickled in pieces so that writing one never stops the
event loop for long.

Why pieces: where the processor cannot fork a writer child, a state is pickled in its writer
thread, but ``pickle.dumps`` is one C call that holds the GIL until it returns, so the event
loop stopped for all of it (~3 s for the books of 100,000 billing accounts, once a minute). A :class:`ChunkedPickle` instead writes a
stream of pickles, one ``Pickler.dump`` per piece, each sized to take about :data:`PIECE_SECONDS`
of CPU: between two pieces the writer runs Python code again, where the interpreter hands the
GIL to the loop once the loop has waited for its switch interval (5 ms). The pieces are spooled
in memory and written to the file :data:`SPOOL_BYTES` at a time, not as the pickler makes them:
each write releases the GIL for its system call and takes it back, and the loop, seeing the GIL
change hands, starts its 5 ms of patience over — writing every piece straight to the file kept
the loop waiting up to ~70 ms at times (measured), against ≤ ~10 ms spooled.

The stream (``pickletools.dis`` reads it one pickle at a time) is:

1. the document, in which every large dict, set and list of its own structure (see
   :func:`_large_containers`) is written empty. It comes first and is a complete pickle, so
   ``pickle.loads`` of the stream gives the document with those containers empty, and
   :func:`load_chunked` can refuse an old version before reading the rest;
2. a manifest: :data:`MANIFEST`, those containers and their sizes (read with the document, so
   it names the very containers the document holds);
3. their entries, in that order, a slice (a dict of items, or a list) per pickle.

Reading is the mirror image (~0.5 s for 100,000 billing accounts): the processor reads a
snapshot in a thread of its own (:func:`load_chunked` of the bytes, the loop running
between two slices as it does while writing) and hands the state a :class:`Loaded` document, so
that an assignment never stops the loop for the time of a load — the consumer's heartbeats
(10 s session timeout) included.

Each slice is a pickle of its own (the pickler's memo is cleared before it): an object shared by
entries of two slices comes back as two equal copies, which is all a map of immutable records
needs. One memo for the whole stream would keep every object shared, but the pickler's memo
table is rehashed in one go each time it doubles, and at the sizes a state reaches that stops
the loop again (measured: ~50 ms at 350,000 memo entries, ~1 s at 5.6 million; billing's books
hold ~36 memoized objects per account). For the same reason an entry must not hold another large container
of the document: it would be written again inside that slice, as a copy.
"""

from __future__ import annotations

import copyreg
import io
import logging
import os
import pickle
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)
SNAPSHOT_FORMAT = 3  # a header pickle (offsets keyed "topic:partition"), then the state's bytes
PROTOCOL = 5
MANIFEST = "meterflow.chunked.v1"  # second pickle of a chunked stream: tells it from a plain one
MIN_CHUNKED = 128  # entries: smaller containers are written inside the document
PIECE_SECONDS = 0.002  # CPU time one dump() should take: the loop waits at most ~5 ms + this
FIRST_PIECE = 64  # entries; later pieces are sized from the time the previous ones took
MAX_DEPTH = 8  # of the document's structure searched for large containers
SPOOL_BYTES = 1 << 20  # pickled bytes kept in memory between two writes to the file

Container = dict[Any, Any] | set[Any] | list[Any]


@dataclass(frozen=True)
class Loaded:
    """The document of a chunked snapshot, already read (off the event loop, by the processor):
    :func:`load_chunked` returns it once ``accept`` takes it."""

    document: object


Blob = bytes | Loaded  # what a state's restore() is given
EMPTY = {dict: pickle.EMPTY_DICT, set: pickle.EMPTY_SET, list: pickle.EMPTY_LIST}


class SnapshotRejected(Exception):
    """Raised by a partition state's ``restore`` for a snapshot it cannot use (an older format,
    an unreadable stream): the processor then rebuilds that state from the event log instead."""


def _large_containers(document: object) -> list[Container]:
    """The dicts, sets and lists (exact types) of at least :data:`MIN_CHUNKED` entries found in
    the document's own structure: its tuple items and the attributes of its plain objects (see
    :func:`_plain`), recursively, but never inside a dict, set or list (their entries are data,
    written with them). A container found there is chunked; any other is written whole, so what
    is found changes the time slices, never the result."""
    found: list[Container] = []
    seen: set[int] = set()
    todo: list[tuple[object, int]] = [(document, 0)]
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind in EMPTY:
            if len(obj) >= MIN_CHUNKED:  # type: ignore[arg-type]
                found.append(obj)  # type: ignore[arg-type]
        elif depth < MAX_DEPTH and kind is tuple:
            todo += [(item, depth + 1) for item in obj]  # type: ignore[attr-defined]
        elif depth < MAX_DEPTH and _plain(obj):
            todo += [(value, depth + 1) for value in vars(obj).values()]
    return found


def _plain(obj: object) -> bool:
    """Whether ``obj`` is pickled as its class and ``__dict__``, and unpickled by putting that
    dict's values in a new instance. Only there may a container arrive empty and be filled after
    the document is read: a class of its own ``__reduce__`` or ``__setstate__`` might read it
    while it is still empty."""
    cls = type(obj)
    return (
        hasattr(obj, "__dict__")
        and not isinstance(obj, (type, types.ModuleType, types.FunctionType))
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and not hasattr(cls, "__setstate__")
        and cls not in copyreg.dispatch_table
    )


@dataclass(eq=False)
class ChunkedPickle:
    """A document to pickle in pieces (see the module docstring), from the writer thread.

    ``document`` must not change until :meth:`write` returns: a state hands over a copy taken on
    the event loop (shallow copies of maps of immutable records are enough)."""

    document: object
    containers: list[Container] = field(init=False)

    def __post_init__(self) -> None:
        self.containers = _large_containers(self.document)

    def write(self, out: IO[bytes]) -> None:
        """Write the stream to ``out``, handing the GIL back between pieces."""
        spool = io.BytesIO()
        # Each large container starts as an empty one in the unpickler's memo (index i), and the
        # pickler's memo says container i is there: the document then refers to it by index.
        spool.write(
            pickle.PROTO
            + bytes([PROTOCOL])
            + b"".join(EMPTY[type(c)] + pickle.MEMOIZE + pickle.POP for c in self.containers)
        )
        pickler = pickle.Pickler(spool, protocol=PROTOCOL)
        pickler.memo = {id(c): (i, c) for i, c in enumerate(self.containers)}
        pickler.dump(self.document)
        pickler.dump((MANIFEST, self.containers, [len(c) for c in self.containers]))
        for container in self.containers:
            for _ in _dump_entries(pickler, container):
                if spool.tell() >= SPOOL_BYTES:
                    _drain(spool, out)
        _drain(spool, out)

    def __call__(self) -> bytes:
        """The whole stream as bytes (tests; a state that is small enough to keep in memory)."""
        out = io.BytesIO()
        self.write(out)
        return out.getvalue()


def _drain(spool: io.BytesIO, out: IO[bytes]) -> None:
    """Move what ``spool`` holds to ``out``."""
    with spool.getbuffer() as pickled:
        out.write(pickled)
    spool.seek(0)
    spool.truncate()


def _dump_entries(pickler: pickle.Pickler, container: Container) -> Iterator[None]:
    """Dump ``container``'s entries in slices (dicts of items, else lists) of about
    :data:`PIECE_SECONDS` each, yielding after each: the first of :data:`FIRST_PIECE` entries,
    each next one sized from the time the last one took (at most 4 times larger: entries of one
    map can weigh differently)."""
    size = FIRST_PIECE  # each map afresh: a meter weighs ~100 times more than its account's id
    entries = iter(container.items() if type(container) is dict else container)
    make: Callable[[Iterator[Any]], Any] = dict if type(container) is dict else list
    while piece := make(islice(entries, size)):
        started = time.thread_time()  # CPU time: turns of the loop while this waits do not count
        pickler.clear_memo()  # a pickle of its own (see the module docstring)
        pickler.dump(piece)
        spent = time.thread_time() - started
        size = max(1, min(4 * size, int(size * PIECE_SECONDS / max(spent, 1e-6))))
        yield


def load_chunked(blob: Blob, accept: Callable[[Any], bool] = lambda document: True) -> Any:
    """The document a :class:`ChunkedPickle` wrote to ``blob``, its containers filled again
    (``blob`` :class:`Loaded`: its document, read already).

    Raises :class:`SnapshotRejected` when ``accept(document)`` is false (checked before the
    containers are read: a snapshot of an older version costs nothing), or when ``blob`` is not
    such a stream (a plain pickle: an older format) or cannot be read."""
    if isinstance(blob, Loaded):
        if not accept(blob.document):
            raise SnapshotRejected("another version")
        return blob.document
    stream = io.BytesIO(blob)
    unpickler = pickle.Unpickler(stream)
    try:
        document = unpickler.load()
        if not accept(document):
            raise SnapshotRejected("another version")
        if stream.tell() == len(blob):
            raise SnapshotRejected("an older format")  # a plain pickle: the document alone
        manifest = unpickler.load()
        if not (isinstance(manifest, tuple) and len(manifest) == 3 and manifest[0] == MANIFEST):
            raise SnapshotRejected("an older format")
        for container, size in zip(manifest[1], manifest[2], strict=True):
            add = container.extend if type(container) is list else container.update
            while len(container) < size:  # a slice that adds nothing ends at EOF: rejected
                add(pickle.load(stream))
    except SnapshotRejected:
        raise
    except Exception as exc:  # truncated, a plain pickle (EOF after one), a class gone: rebuild
        raise SnapshotRejected(f"unreadable: {exc!r}") from exc
    return document


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not ours to judge
        return True
    return True


@dataclass
class Snapshots:
    """Snapshot files of one processor: ``<dir>/<partition>.snap`` written atomically.

    A file is a pickled header (format, next offset per input topic, time) followed by the
    state's bytes, which a :class:`ChunkedPickle` writes into the file as it pickles them. Each
    writer writes a temporary file of its own (``<partition>.<pid>.tmp``) and renames it: a
    writer process may outlive the worker that forked it (SIGKILL), and two writers of one file
    would interleave their bytes — a header of one with the state of the other. The temporary
    files of writers no longer running are removed when the directory is opened."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for tmp in self.directory.glob("*.tmp"):
            pid = tmp.suffixes[-2][1:] if len(tmp.suffixes) >= 2 else ""
            if not (pid.isdigit() and _running(int(pid))):
                tmp.unlink(missing_ok=True)

    def read(self, partition: int) -> tuple[dict[str, int], bytes] | None:
        """(next offset per input topic, state blob) or None when there is no usable snapshot."""
        path = self.directory / f"{partition}.snap"
        if not path.exists():
            return None
        # Unbuffered, and the rest taken with readall(): a buffered read() of it joins the
        # buffer's bytes to the rest, a copy of tens of MB (faulting in fresh pages) holding the
        # GIL — ~0.1 s of a stopped loop at 100,000 billing accounts, against ~4 ms so.
        with open(path, "rb", buffering=0) as stream:
            try:
                header = pickle.load(stream)
            except Exception as exc:  # a torn or foreign file: rebuild from the log instead
                log.warning("snapshot %s unreadable (%r): rebuilding from the event log", path, exc)
                return None
            if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
                log.warning("snapshot %s of an older format: rebuilding from the event log", path)
                return None
            return dict(header["offsets"]), stream.readall()

    def write(self, partition: int, offsets: dict[str, int], state: bytes | ChunkedPickle) -> None:
        """Replace the snapshot of ``partition`` (write to a temp file, fsync, rename)."""
        path = self.directory / f"{partition}.snap"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as out:
            header = {"format": SNAPSHOT_FORMAT, "offsets": offsets, "at": time.time()}
            pickle.dump(header, out, protocol=PROTOCOL)
            if isinstance(state, bytes):
                out.write(state)
            else:
                state.write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
