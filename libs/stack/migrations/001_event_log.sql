-- The durable copy of every Kafka message meterflow writes (MISSION.md F5: backup, archive,
-- replay). One row per (topic, partition, offset); a redelivered message replaces itself
-- (ReplacingMergeTree), so read with FINAL for exact results. `restore` replays it into an
-- empty broker in offset order.
CREATE TABLE IF NOT EXISTS mf_event_log
(
    topic       LowCardinality(String),
    partition   UInt16,
    offset      UInt64,
    key         Nullable(String),
    value       String,
    timestamp   DateTime64(3, 'UTC'),
    type        LowCardinality(String),
    archived_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY topic
ORDER BY (topic, partition, offset)
