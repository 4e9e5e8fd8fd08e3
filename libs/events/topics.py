"""The topic catalogue: every Kafka topic meterflow uses, as code.

Facts are the system of record (MISSION.md F5), so fact topics keep everything
(``retention.ms = -1``) and use ``cleanup.policy = delete``: nothing here relies on compaction,
which the embedded broker does not perform (shared/BROKER-NOTES.md). The archive in ClickHouse
is the long-term copy and the restore source.

Partition counts set the ceiling of consumer parallelism per topic; keys keep one subject's
events ordered on one partition.
"""

from __future__ import annotations

from dataclasses import dataclass

FOREVER = -1
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    """One topic: its name, partition count, what its messages are keyed by, and retention."""

    name: str
    partitions: int
    key: str
    description: str
    cleanup_policy: str = "delete"
    retention_ms: int = FOREVER

    @property
    def configs(self) -> dict[str, str]:
        """Topic-level configs passed at creation."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


REGISTRY_TOPIC = Topic(
    "mf.registry",
    6,
    "meter or concentrator id",
    "topology: meters and concentrators registered, updated, replaced",
)
READINGS = Topic(
    "mf.readings", 12, "meter id", "readings (single and batched) and failed reads", retention_ms=FOREVER
)
COMM = Topic("mf.comm", 6, "meter or concentrator id", "online / lost-contact / route switches")
TARIFFS = Topic("mf.tariffs", 1, "tariff id", "tariff versions as published")
BILLING = Topic("mf.billing", 6, "account id", "accounts, money movements, tariff changes, alarm thresholds")
# Billing's consequences, apart from its causes: billing never reads them back (two or more per
# reading), and consumers that only need causes (control) never fetch them.
LEDGER = Topic("mf.ledger", 6, "account id", "charges, balance changes, postpaid bills, freezes")
ALARMS = Topic("mf.alarms", 6, "subject id (account or meter)", "alarms raised and cleared")
COMMANDS = Topic("mf.commands", 6, "meter id", "relay / valve / parameter command lifecycle")
CONTROL = Topic(
    "mf.control",
    6,
    "meter id (batch id for batches)",
    "operator control facts: forced state, keep-power, limits, schedules, batches",
)
NOTIFICATIONS = Topic(
    "mf.notifications",
    3,
    "recipient",
    "notifications requested, delivered, failed",
    retention_ms=180 * DAY_MS,
)
IAM = Topic("mf.iam", 1, "project, user or API key id", "projects, users, roles, API keys, logins")
DEAD_LETTER = Topic(
    "mf.dead-letter", 1, "original key", "messages a consumer could not process after retries"
)

CATALOGUE: tuple[Topic, ...] = (
    REGISTRY_TOPIC,
    READINGS,
    COMM,
    TARIFFS,
    BILLING,
    LEDGER,
    ALARMS,
    COMMANDS,
    CONTROL,
    NOTIFICATIONS,
    IAM,
    DEAD_LETTER,
)
BY_NAME: dict[str, Topic] = {t.name: t for t in CATALOGUE}
