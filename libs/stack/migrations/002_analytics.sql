-- Analytics schema (MISSION.md E1-E6, B7). Written by services/api/analytics/sink.py from the
-- catalogue topics, read by analysts and by services/api/analytics/queries.py. The same SQL runs
-- on chDB and on a ClickHouse server. docs/analytics.md describes every table and view.
--
-- Dedup rule: every fact table is a ReplacingMergeTree whose sorting key ends in the event id
-- (plus the quantity and rate for readings), so a redelivered event collapses into the row it
-- repeats. Merges are eventual: read fact tables with FINAL (the v_* views do) or aggregate with
-- functions that a repeated row cannot change (min, max, argMax, uniq). The consumption tables
-- hold only min/max/uniq states for that reason.
--
-- Reporting days and months are calendar days in Asia/Shanghai (UTC+8, the sites' local time),
-- while every stored time is UTC.

-- Raw readings: one row per meter x quantity x rate of each ReadingRecorded. Registers are the
-- cumulative counters (kind = 'register', rate total/sharp/peak/flat/valley), instantaneous
-- values have kind = 'instant' and rate ''.
CREATE TABLE IF NOT EXISTS readings
(
    project_id      LowCardinality(String),
    meter_id        String,
    time            DateTime64(3, 'UTC'),
    quantity        LowCardinality(String),
    rate            LowCardinality(String),
    kind            Enum8('register' = 1, 'instant' = 2),
    value           Decimal(38, 6),
    event_id        String,
    received_at     DateTime64(3, 'UTC'),
    concentrator_id LowCardinality(String),
    frozen          LowCardinality(String) DEFAULT ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, meter_id, time, quantity, rate, event_id);

-- Per reading, the non-register facts: relay / valve state, prepaid meters' own balance.
CREATE TABLE IF NOT EXISTS reading_status
(
    project_id      LowCardinality(String),
    meter_id        String,
    time            DateTime64(3, 'UTC'),
    event_id        String,
    relay           LowCardinality(String) DEFAULT '',
    valve           LowCardinality(String) DEFAULT '',
    remaining_fen   Nullable(Int64),
    purchase_count  Nullable(UInt32),
    concentrator_id LowCardinality(String),
    failover        UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, meter_id, time, event_id);

-- Failed reads (after the driver's retries).
CREATE TABLE IF NOT EXISTS reading_failures
(
    project_id      LowCardinality(String),
    meter_id        String,
    time            DateTime64(3, 'UTC'),
    event_id        String,
    reason          LowCardinality(String),
    detail          String,
    attempts        UInt16,
    concentrator_id LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, meter_id, time, event_id);

-- Daily consumption per meter, quantity and rate: min and max of the cumulative register that
-- day (and when they were seen). Fed by the materialized view below on every insert into
-- readings; min/max/uniq states are idempotent, so duplicates cannot change a result.
CREATE TABLE IF NOT EXISTS consumption_daily
(
    project_id  LowCardinality(String),
    meter_id    String,
    quantity    LowCardinality(String),
    rate        LowCardinality(String),
    day         Date,
    first_value AggregateFunction(min, Decimal(38, 6)),
    last_value  AggregateFunction(max, Decimal(38, 6)),
    first_time  AggregateFunction(min, DateTime64(3, 'UTC')),
    last_time   AggregateFunction(max, DateTime64(3, 'UTC')),
    readings    AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (project_id, meter_id, quantity, rate, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_consumption_daily TO consumption_daily AS
SELECT
    project_id,
    meter_id,
    quantity,
    rate,
    toDate(time, 'Asia/Shanghai') AS day,
    minState(value) AS first_value,
    maxState(value) AS last_value,
    minState(time) AS first_time,
    maxState(time) AS last_time,
    uniqState(event_id) AS readings
FROM readings
WHERE kind = 'register'
GROUP BY project_id, meter_id, quantity, rate, day;

-- The same per calendar month (first day of the month).
CREATE TABLE IF NOT EXISTS consumption_monthly
(
    project_id  LowCardinality(String),
    meter_id    String,
    quantity    LowCardinality(String),
    rate        LowCardinality(String),
    month       Date,
    first_value AggregateFunction(min, Decimal(38, 6)),
    last_value  AggregateFunction(max, Decimal(38, 6)),
    first_time  AggregateFunction(min, DateTime64(3, 'UTC')),
    last_time   AggregateFunction(max, DateTime64(3, 'UTC')),
    readings    AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYear(month)
ORDER BY (project_id, meter_id, quantity, rate, month);

CREATE MATERIALIZED VIEW IF NOT EXISTS mv_consumption_monthly TO consumption_monthly AS
SELECT
    project_id,
    meter_id,
    quantity,
    rate,
    toStartOfMonth(time, 'Asia/Shanghai') AS month,
    minState(value) AS first_value,
    maxState(value) AS last_value,
    minState(time) AS first_time,
    maxState(time) AS last_time,
    uniqState(event_id) AS readings
FROM readings
WHERE kind = 'register'
GROUP BY project_id, meter_id, quantity, rate, month;

-- Meter attributes, one row per attribute and change (MeterRegistered writes them all,
-- MeterUpdated the changed ones, MeterReplaced the address). The latest value per name wins.
-- Analysts' grouping attributes arrive the same way: building, floor, room, master_meter_id.
CREATE TABLE IF NOT EXISTS meter_attributes
(
    project_id LowCardinality(String),
    meter_id   String,
    name       LowCardinality(String),
    value      String,
    time       DateTime64(3, 'UTC'),
    event_id   String
)
ENGINE = ReplacingMergeTree(time)
ORDER BY (project_id, meter_id, name);

-- Accounts as opened (AccountOpened); one row per account.
CREATE TABLE IF NOT EXISTS accounts
(
    project_id    LowCardinality(String),
    account_id    String,
    mode          LowCardinality(String),
    meter_ids     Array(String),
    tariff_id     String,
    holder        String,
    phone         String DEFAULT '',
    overdraft_fen Int64,
    opened_by     String,
    opened_at     DateTime64(3, 'UTC'),
    event_id      String
)
ENGINE = ReplacingMergeTree
ORDER BY (project_id, account_id, event_id);

-- Money movements accepted (recharge, refund, clear, allowance): the sales ledger (B3, B7).
-- amount_fen is what the customer paid in (negative for refunds, 0 for a clear).
CREATE TABLE IF NOT EXISTS sales
(
    project_id       LowCardinality(String),
    account_id       String,
    time             DateTime64(3, 'UTC'),
    kind             LowCardinality(String),
    amount_fen       Int64,
    channel          LowCardinality(String) DEFAULT '',
    operator_id      String,
    idempotency_key  String,
    payment_order_id String DEFAULT '',
    detail           String DEFAULT '',
    event_id         String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, account_id, time, event_id);

-- The balance ledger: every BalanceChanged (recharge, refund, clear, allowance, charge,
-- adjustment) with the balance after it.
CREATE TABLE IF NOT EXISTS balance_changes
(
    project_id   LowCardinality(String),
    account_id   String,
    time         DateTime64(3, 'UTC'),
    sequence     UInt64,
    delta_fen    Int64,
    balance_fen  Int64,
    reason       LowCardinality(String),
    causation_id String DEFAULT '',
    event_id     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, account_id, time, event_id);

-- Alarms raised and cleared (one row per fact).
CREATE TABLE IF NOT EXISTS alarm_events
(
    project_id LowCardinality(String),
    subject_id String,
    alarm_id   String,
    time       DateTime64(3, 'UTC'),
    state      Enum8('raised' = 1, 'cleared' = 2),
    kind       LowCardinality(String),
    severity   UInt8,
    message    String,
    event_id   String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, alarm_id, time, event_id);

-- Command lifecycle: requested, sent, acknowledged, failed (one row per fact).
CREATE TABLE IF NOT EXISTS command_events
(
    project_id   LowCardinality(String),
    meter_id     String,
    command_id   String,
    time         DateTime64(3, 'UTC'),
    stage        Enum8('requested' = 1, 'sent' = 2, 'acknowledged' = 3, 'failed' = 4),
    action       LowCardinality(String) DEFAULT '',
    requested_by String DEFAULT '',
    attempt      UInt16 DEFAULT 0,
    will_retry   UInt8 DEFAULT 0,
    detail       String DEFAULT '',
    event_id     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, command_id, time, event_id);

-- Communication status of meters and concentrators: online, lost_contact / offline, route
-- switches (failover).
CREATE TABLE IF NOT EXISTS comm_events
(
    project_id   LowCardinality(String),
    subject_kind Enum8('meter' = 1, 'concentrator' = 2),
    subject_id   String,
    time         DateTime64(3, 'UTC'),
    status       LowCardinality(String),
    detail       String DEFAULT '',
    event_id     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, subject_kind, subject_id, time, event_id);

-- Notifications requested, delivered, failed.
CREATE TABLE IF NOT EXISTS notification_events
(
    project_id      LowCardinality(String),
    notification_id String,
    time            DateTime64(3, 'UTC'),
    stage           Enum8('requested' = 1, 'delivered' = 2, 'failed' = 3),
    channel         LowCardinality(String),
    recipient       String DEFAULT '',
    template        LowCardinality(String) DEFAULT '',
    account_id      String DEFAULT '',
    provider        LowCardinality(String) DEFAULT '',
    attempt         UInt16 DEFAULT 0,
    detail          String DEFAULT '',
    event_id        String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, notification_id, time, event_id);

-- ---- views for analysts --------------------------------------------------------------------

CREATE VIEW IF NOT EXISTS v_meters AS
SELECT
    project_id,
    meter_id,
    argMaxIf(value, time, name = 'address') AS address,
    argMaxIf(value, time, name = 'medium') AS medium,
    argMaxIf(value, time, name = 'concentrator_id') AS concentrator_id,
    argMaxIf(value, time, name = 'bus_id') AS bus_id,
    argMaxIf(value, time, name = 'building') AS building,
    argMaxIf(value, time, name = 'master_meter_id') AS master_meter_id,
    toDecimal64OrNull(nullIf(argMaxIf(value, time, name = 'multiplier'), ''), 4) AS multiplier_or_null,
    ifNull(multiplier_or_null, toDecimal64(1, 4)) AS multiplier
FROM meter_attributes
GROUP BY project_id, meter_id;

CREATE VIEW IF NOT EXISTS v_meter_accounts AS
SELECT project_id, arrayJoin(meter_ids) AS meter_id, account_id, holder, mode
FROM accounts FINAL;

CREATE VIEW IF NOT EXISTS v_daily_energy AS
SELECT
    project_id,
    meter_id,
    quantity,
    rate,
    day,
    minMerge(first_value) AS opening,
    maxMerge(last_value) AS closing,
    closing - opening AS consumption,
    minMerge(first_time) AS first_time,
    maxMerge(last_time) AS last_time,
    uniqMerge(readings) AS readings
FROM consumption_daily
GROUP BY project_id, meter_id, quantity, rate, day;

CREATE VIEW IF NOT EXISTS v_monthly_energy AS
SELECT
    project_id,
    meter_id,
    quantity,
    rate,
    month,
    minMerge(first_value) AS opening,
    maxMerge(last_value) AS closing,
    closing - opening AS consumption,
    minMerge(first_time) AS first_time,
    maxMerge(last_time) AS last_time,
    uniqMerge(readings) AS readings
FROM consumption_monthly
GROUP BY project_id, meter_id, quantity, rate, month;

CREATE VIEW IF NOT EXISTS v_balances_latest AS
SELECT
    project_id,
    account_id,
    argMax(balance_fen, (time, sequence)) AS balance_fen,
    max(time) AS updated_at
FROM balance_changes
GROUP BY project_id, account_id;

CREATE VIEW IF NOT EXISTS v_arrears_ageing AS
SELECT
    project_id,
    account_id,
    latest_balance AS balance_fen,
    arrears_since,
    dateDiff('day', arrears_since, now64(3)) AS days_in_arrears,
    multiIf(days_in_arrears <= 30, '0-30', days_in_arrears <= 60, '31-60', days_in_arrears <= 90, '61-90', '90+') AS bucket
FROM
(
    SELECT
        project_id,
        account_id,
        arraySort(groupArray((time, sequence, balance_fen))) AS history,
        history[-1].3 AS latest_balance,
        arrayFilter(x -> x.3 >= 0, history) AS non_negative,
        if(empty(non_negative), toDateTime64(0, 3, 'UTC'), non_negative[-1].1) AS last_non_negative,
        arrayFirst(x -> x.1 > last_non_negative, history).1 AS arrears_since
    FROM balance_changes
    GROUP BY project_id, account_id
)
WHERE latest_balance < 0;

CREATE VIEW IF NOT EXISTS v_comm_latest AS
SELECT
    project_id,
    subject_kind,
    subject_id,
    argMax(e.status, e.time) AS status,
    max(e.time) AS since,
    maxIf(e.time, e.status = 'online') AS last_online
FROM comm_events AS e
WHERE e.status != 'route_switched'
GROUP BY project_id, subject_kind, subject_id;

CREATE VIEW IF NOT EXISTS v_lost_contact AS
SELECT project_id, subject_kind, subject_id, status, since, last_online
FROM v_comm_latest
WHERE status IN ('lost_contact', 'offline');

CREATE VIEW IF NOT EXISTS v_alarms AS
SELECT
    project_id,
    alarm_id,
    anyIf(subject_id, state = 'raised') AS subject_id,
    any(kind) AS kind,
    maxIf(severity, state = 'raised') AS severity,
    anyIf(message, state = 'raised') AS message,
    minIf(time, state = 'raised') AS raised_at,
    maxIf(time, state = 'cleared') AS cleared_at,
    countIf(state = 'cleared') = 0 AS active
FROM alarm_events FINAL
GROUP BY project_id, alarm_id;

CREATE VIEW IF NOT EXISTS v_commands AS
SELECT
    project_id,
    command_id,
    any(meter_id) AS meter_id,
    anyIf(action, stage = 'requested') AS action,
    anyIf(requested_by, stage = 'requested') AS requested_by,
    minIf(time, stage = 'requested') AS requested_at,
    argMax(toString(stage), (time, toUInt8(stage))) AS status,
    max(time) AS updated_at,
    countIf(stage = 'sent') AS attempts
FROM command_events FINAL
GROUP BY project_id, command_id;

CREATE VIEW IF NOT EXISTS v_notifications AS
SELECT
    project_id,
    notification_id,
    anyIf(channel, stage = 'requested') AS channel,
    anyIf(recipient, stage = 'requested') AS recipient,
    anyIf(template, stage = 'requested') AS template,
    anyIf(account_id, stage = 'requested') AS account_id,
    minIf(time, stage = 'requested') AS requested_at,
    argMax(toString(stage), (time, toUInt8(stage))) AS status,
    countIf(stage = 'failed') AS failures
FROM notification_events FINAL
GROUP BY project_id, notification_id
;

-- The analytics sink's checkpoint: per consumer and partition, the next offset to read. Written
-- after the batch's rows are inserted, so a crash re-reads at most one batch (which the
-- dedup rule collapses).
CREATE TABLE IF NOT EXISTS analytics_offsets
(
    consumer    LowCardinality(String),
    topic       LowCardinality(String),
    partition   UInt16,
    next_offset UInt64,
    updated_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(next_offset)
ORDER BY (consumer, topic, partition)
