"""The topic catalogue: every Kafka topic meterflow uses, as code.

Facts are the system of record (MISSION.md F5), so fact topics keep everything
(``retention.ms = -1``) and use ``cleanup.policy = delete``: nothing here relies on compaction,
which the embedded broker does not perform (shared/BROKER-NOTES.md). The archive in ClickHouse
is the long-term copy and the restore source.

Partition counts set the ceiling of consumer parallelism per topic; keys keep one subject's
events ordered on one partition. ``MF_PARTITIONS_MAX`` (read once, at import) caps every topic's
count for a deployment: the embedded stack runs with 1 (`meterflow dev` sets it for itself and
its services), because the embedded broker's cost per fetch grows with the partitions a fetch
names and, for each partition that returns data, with the batches that partition holds
(docs/architecture.md); one replica per service needs no more. Every process of a deployment
must see the same value; unset or 0 keeps the counts below (production Kafka or Redpanda).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from libs.partitions import partitions_max

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


PARTITIONS_MAX = partitions_max(os.environ.get("MF_PARTITIONS_MAX"))


def capped(topic: Topic, cap: int = PARTITIONS_MAX) -> Topic:
    """``topic`` with at most ``cap`` partitions (unchanged when ``cap`` is 0)."""
    return replace(topic, partitions=min(topic.partitions, cap)) if cap else topic


# mf.registry, mf.readings, mf.bindings and mf.control-in have one partition count: billing's and
# control's stateful stages join them by meter (co-partitioned: partition p of each holds the same
# meters), docs/architecture.md.
REGISTRY_TOPIC = capped(
    Topic(
        "mf.registry",
        12,
        "meter or concentrator id",
        "topology: meters and concentrators registered, updated, replaced",
    )
)
READINGS = capped(
    Topic(
        "mf.readings", 12, "meter id", "readings (single and batched) and failed reads", retention_ms=FOREVER
    )
)
COMM = capped(Topic("mf.comm", 6, "meter or concentrator id", "online / lost-contact / route switches"))
TARIFFS = capped(Topic("mf.tariffs", 1, "tariff id", "tariff versions as published"))
BILLING = capped(
    Topic(
        "mf.billing",
        6,
        "account id (plan id for allowance plans)",
        "accounts, money movements, tariff changes, alarm thresholds, allowance plans",
    )
)
# Billing's router re-keys: an account's meters, bound by meter (co-partitioned with mf.readings),
# and every fact billing folds, by account (co-partitioned with mf.billing; reference facts —
# tariffs, allowance plans, project thresholds — written to every partition). Billing's books
# fold mf.billing-in alone: one ordered log per partition, so a replay folds what live folded.
BINDINGS = capped(
    Topic(
        "mf.bindings",
        12,
        "meter id",
        "meter → account bindings (billing.v1.meter_bound), re-keyed from mf.billing by billing's router",
    )
)
BILLING_IN = capped(
    Topic(
        "mf.billing-in",
        6,
        "account id",
        "every fact billing's books fold, routed to its account's partition by billing's router",
    )
)
# Control's router re-keys what control folds besides readings and registry (commands, operator
# facts, arrears alarms, accounts, tariffs) by meter: co-partitioned with mf.readings.
CONTROL_IN = capped(
    Topic(
        "mf.control-in",
        12,
        "meter id",
        "every fact control folds but readings and registry, routed to its meters' partitions by control's router",
    )
)
# Billing's consequences, apart from its causes: billing never reads them back (two or more per
# reading), and consumers that only need causes (control) never fetch them.
LEDGER = capped(Topic("mf.ledger", 6, "account id", "charges, balance changes, postpaid bills, freezes"))
ALARMS = capped(Topic("mf.alarms", 6, "subject id (account or meter)", "alarms raised and cleared"))
COMMANDS = capped(Topic("mf.commands", 6, "meter id", "relay / valve / parameter command lifecycle"))
CONTROL = capped(
    Topic(
        "mf.control",
        6,
        "meter id (batch id for batches)",
        "operator control facts: forced state, keep-power, limits, schedules, batches",
    )
)
NOTIFICATIONS = capped(
    Topic(
        "mf.notifications",
        3,
        "recipient",
        "notifications requested, delivered, failed",
        retention_ms=180 * DAY_MS,
    )
)
IAM = capped(Topic("mf.iam", 1, "project, user or API key id", "projects, users, roles, API keys, logins"))
DEAD_LETTER = capped(
    Topic("mf.dead-letter", 1, "original key", "messages a consumer could not process after retries")
)

CATALOGUE: tuple[Topic, ...] = (
    REGISTRY_TOPIC,
    READINGS,
    COMM,
    TARIFFS,
    BILLING,
    BINDINGS,
    BILLING_IN,
    LEDGER,
    ALARMS,
    COMMANDS,
    CONTROL,
    CONTROL_IN,
    NOTIFICATIONS,
    IAM,
    DEAD_LETTER,
)
BY_NAME: dict[str, Topic] = {t.name: t for t in CATALOGUE}
