"""The one transaction layer: bus lock, priorities, timeouts, retries and bus statistics.

An RS-485 / M-Bus segment is half duplex and every meter hears every request, so only one
request may be outstanding on a bus (MISSION A2). :class:`Bus` owns the transport of one bus and
runs :meth:`Bus.transact` one at a time, highest priority first (a relay command queued behind
routine reads goes next, not last). One transaction:

1. discard stale input (a late reply to an earlier, timed-out request must not be taken for
   this one);
2. send the request;
3. read and feed the codec's ``decode`` until a whole frame that ``accept`` takes arrives —
   framing is length driven, so partial input waits; garbage before a frame is skipped; echoes
   and other meters' frames are ignored — or until the deadline::

       deadline = (request + expected reply bytes) × character time
                  + allowed response delay + slack

   While bytes keep arriving the deadline stretches by the allowed inter-byte gap (DL/T 645-2007
   clause 5.1 allows up to 500 ms before the reply and between bytes), capped at twice the
   computed timeout;
4. a bad frame (:class:`~libs.protocols.errors.FrameError`) or a timeout is retried after a
   backoff, up to ``timing.retries`` more times; then :class:`BadReply` / :class:`NoReply`.

A broadcast (``expect_reply=False``) waits the request's line time and returns ``None``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from libs.protocols.errors import FrameError
from libs.protocols.transport import LineSettings, Transport

Decode = Callable[[bytes], tuple[int, Any]]
Accept = Callable[[Any], bool]


class Priority(IntEnum):
    """Order of queued transactions: lower goes first."""

    COMMAND = 0  # relay / valve commands, operator actions
    ON_DEMAND = 1  # a read somebody is waiting for
    ROUTINE = 2  # scheduled polling


@dataclass(frozen=True)
class Timing:
    """Per-bus (or per-model) timing and retry policy; all times in seconds."""

    response_delay: float = 0.5  # longest a meter may take before its first reply byte
    byte_gap: float = 0.5  # longest silence allowed between bytes of one reply
    slack: float = 0.1  # network / adapter latency on top of the line time
    retries: int = 2  # further attempts after the first
    backoff: float = 0.05  # wait before retry n: backoff × 2^(n-1)
    max_reply: int = 64  # expected reply bytes when the caller gives no size
    broadcast_settle: float = 0.0  # extra quiet time after a broadcast, for meters to act

    def with_(self, **changes: Any) -> Timing:
        """A copy with some fields changed."""
        return replace(self, **changes)


# Allowed response delays by protocol: DL/T 645 (both editions) 500 ms before the reply and
# between bytes; CJ/T 188 meters in the field take up to ~500 ms (battery meters wake first);
# Modbus over serial line leaves it to the device, 200 ms is usual; EN 13757-2 clause 5.7 allows
# 330 bit times + 50 ms.
DEFAULT_TIMING: dict[str, Timing] = {
    "dlt645-2007": Timing(),
    "dlt645-1997": Timing(),
    "cjt188": Timing(response_delay=0.6, max_reply=48),
    "modbus-rtu": Timing(response_delay=0.2, byte_gap=0.05, max_reply=64),
    "mbus": Timing(response_delay=0.2, byte_gap=0.1, max_reply=255),
}


class TransactionError(Exception):
    """A transaction that failed after all attempts; ``attempts`` counts them."""

    def __init__(self, message: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(f"{message} (after {attempts} attempt{'s' if attempts != 1 else ''})")


class NoReply(TransactionError):
    """Nothing usable arrived before the deadline of any attempt (offline meter, dead DTU)."""

    def __init__(self, attempts: int, partial: bytes = b"") -> None:
        self.partial = partial
        tail = f"; last partial input {partial[:32].hex(' ').upper()}" if partial else ""
        super().__init__(f"no reply{tail}", attempts)


class BadReply(TransactionError):
    """Replies arrived but the last attempt's was malformed; ``error`` is its FrameError."""

    def __init__(self, attempts: int, error: FrameError) -> None:
        self.error = error
        super().__init__(f"bad reply: {error}", attempts)


@dataclass
class BusStats:
    """Counters for utilisation metrics of one bus."""

    transactions: int = 0  # calls of transact that completed or failed
    attempts: int = 0  # requests put on the bus (transactions + retries)
    replies: int = 0
    broadcasts: int = 0
    timeouts: int = 0  # attempts that ended without a frame
    bad_frames: int = 0  # attempts that ended with a FrameError
    retries: int = 0
    failures: int = 0  # transactions that raised NoReply / BadReply
    busy_seconds: float = 0.0  # time the bus lock was held
    bytes_sent: int = 0
    bytes_received: int = 0
    bytes_discarded: int = 0  # stale input thrown away before a request

    def utilisation(self, elapsed: float) -> float:
        """Fraction of ``elapsed`` seconds the bus was busy."""
        return self.busy_seconds / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class TransactionRecord:
    """One finished transaction, for tracing: monotonic start/end, attempts, outcome."""

    started: float
    ended: float
    priority: Priority
    attempts: int
    outcome: str  # reply | broadcast | no_reply | bad_reply | error


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class PriorityLock:
    """An asyncio lock whose waiters are served by priority, then first come first served."""

    def __init__(self) -> None:
        self._locked = False
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()

    def locked(self) -> bool:
        """True while held."""
        return self._locked

    @property
    def waiting(self) -> int:
        """Number of queued acquirers."""
        return sum(1 for w in self._waiters if not w.future.done())

    async def acquire(self, priority: int = Priority.ROUTINE) -> None:
        """Wait for the lock; a cancelled waiter leaves the queue (or passes the lock on)."""
        if not self._locked and not self._waiters:
            self._locked = True
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(int(priority), next(self._seq), future)
        heapq.heappush(self._waiters, waiter)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # we were handed the lock as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        """Hand the lock to the most urgent waiter, or free it."""
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            if not waiter.future.done():
                waiter.future.set_result(None)  # ownership passes directly: stays locked
                return
        self._locked = False


class _Attempt(Exception):
    """Internal: one attempt failed (timeout or bad frame)."""

    def __init__(self, error: FrameError | None, partial: bytes = b"") -> None:
        self.error = error
        self.partial = partial


class Bus:
    """One bus behind one transport: transactions one at a time, by priority.

    ``decode`` is the codec's ``decode`` (for Modbus-RTU: ``decode_response``); ``line`` defaults
    to the transport's line settings; ``timing`` to the protocol's entry in ``DEFAULT_TIMING``.
    """

    def __init__(
        self,
        transport: Transport,
        decode: Decode,
        line: LineSettings | None = None,
        timing: Timing | None = None,
        name: str = "",
        trace: int = 256,
    ) -> None:
        self.transport = transport
        self.decode = decode
        self.line = line or transport.line
        self.timing = timing or Timing()
        self.name = name or transport.endpoint
        self.stats = BusStats()
        self.records: deque[TransactionRecord] = deque(maxlen=trace)
        self._lock = PriorityLock()

    @property
    def queued(self) -> int:
        """Transactions waiting for the bus."""
        return self._lock.waiting

    def timeout_for(
        self, request_len: int, reply_len: int | None = None, timing: Timing | None = None
    ) -> float:
        """Seconds to wait for a whole reply after sending ``request_len`` bytes."""
        t = timing or self.timing
        reply = t.max_reply if reply_len is None else reply_len
        return self.line.wire_time(request_len + reply) + t.response_delay + t.slack

    async def transact(
        self,
        request: bytes,
        expect_reply: bool = True,
        response_timeout: float | None = None,
        *,
        reply_size: int | None = None,
        accept: Accept | None = None,
        priority: Priority = Priority.ROUTINE,
        timing: Timing | None = None,
    ) -> Any:
        """Send ``request`` and return the decoded reply frame (``None`` for a broadcast).

        ``reply_size`` is the expected reply length in bytes (for the timeout);
        ``response_timeout`` overrides the computed timeout; ``accept`` filters frames (echoes,
        other meters' late replies); ``timing`` overrides the bus timing for this call (a slow
        model). Raises :class:`NoReply`, :class:`BadReply`, or ``TransportError``.
        """
        t = timing or self.timing
        await self._lock.acquire(priority)
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts, outcome = 0, "error"
        try:
            if not expect_reply:
                attempts = 1
                await self._send(request)
                await asyncio.sleep(self.line.wire_time(len(request)) + t.broadcast_settle)
                self.stats.broadcasts += 1
                outcome = "broadcast"
                return None
            timeout = response_timeout or self.timeout_for(len(request), reply_size, t)
            last: _Attempt | None = None
            for attempts in range(1, t.retries + 2):
                if attempts > 1:
                    self.stats.retries += 1
                    await asyncio.sleep(t.backoff * 2 ** (attempts - 2))
                await self._send(request)
                try:
                    frame = await self._await_reply(timeout, t, accept)
                except _Attempt as failed:
                    last = failed
                    if failed.error is None:
                        self.stats.timeouts += 1
                    else:
                        self.stats.bad_frames += 1
                    continue
                self.stats.replies += 1
                outcome = "reply"
                return frame
            self.stats.failures += 1
            assert last is not None
            if last.error is not None:
                outcome = "bad_reply"
                raise BadReply(attempts, last.error)
            outcome = "no_reply"
            raise NoReply(attempts, last.partial)
        finally:
            ended = loop.time()
            self.stats.transactions += 1
            self.stats.busy_seconds += ended - started
            self.records.append(TransactionRecord(started, ended, priority, attempts, outcome))
            self._lock.release()

    async def _send(self, request: bytes) -> None:
        while stale := await self.transport.receive(0):
            self.stats.bytes_discarded += len(stale)
        await self.transport.send(request)
        self.stats.attempts += 1
        self.stats.bytes_sent += len(request)

    async def _await_reply(self, timeout: float, t: Timing, accept: Accept | None) -> Any:
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline, cap = now + timeout, now + 2 * timeout
        buf = b""
        while True:
            now = loop.time()
            if now >= deadline:
                raise _Attempt(None, buf)
            chunk = await self.transport.receive(deadline - now)
            if not chunk:
                continue
            self.stats.bytes_received += len(chunk)
            buf += chunk
            # a reply still arriving may run past the estimate, within the inter-byte gap
            deadline = max(deadline, min(cap, loop.time() + t.byte_gap))
            while buf:
                try:
                    consumed, frame = self.decode(buf)
                except FrameError as exc:
                    raise _Attempt(exc, buf) from None
                buf = buf[consumed:]
                if frame is None:
                    break
                if accept is None or accept(frame):
                    return frame
