-- Billing detail for finance reports (MISSION.md B5, A5): priced charge lines, postpaid monthly
-- bills and platform-side freezes. Sorting keys end in the event id (ReplacingMergeTree), so a
-- redelivered fact collapses like every other analytics table.

-- One row per priced line of a ChargeApplied: units and fen per tariff version, rate and tier.
CREATE TABLE IF NOT EXISTS charge_lines
(
    project_id  LowCardinality(String),
    account_id  String,
    meter_id    String,
    time        DateTime64(3, 'UTC'),
    start       DateTime64(3, 'UTC'),
    end         DateTime64(3, 'UTC'),
    line        UInt16,
    tariff_id   LowCardinality(String),
    version     UInt32,
    category    LowCardinality(String),
    component   LowCardinality(String),
    rate        LowCardinality(String),
    tier        UInt8,
    units       Decimal(38, 6),
    price_fen   Decimal(38, 6),
    amount_fen  Int64,
    event_id    String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (project_id, account_id, time, event_id, line);

-- Postpaid monthly bills (SettlementIssued): one row per bill line, the bill total repeated.
CREATE TABLE IF NOT EXISTS settlement_lines
(
    project_id  LowCardinality(String),
    account_id  String,
    period      LowCardinality(String),
    time        DateTime64(3, 'UTC'),
    line        UInt16,
    tariff_id   LowCardinality(String),
    version     UInt32,
    category    LowCardinality(String),
    component   LowCardinality(String),
    rate        LowCardinality(String),
    tier        UInt8,
    units       Decimal(38, 6),
    price_fen   Decimal(38, 6),
    amount_fen  Int64,
    total_fen   Int64,
    charges     UInt32,
    event_id    String
)
ENGINE = ReplacingMergeTree
ORDER BY (project_id, account_id, period, event_id, line);

-- Daily and monthly freezes (MeterFrozen): the registers at the instant and the balance.
CREATE TABLE IF NOT EXISTS meter_freezes
(
    project_id  LowCardinality(String),
    account_id  String,
    meter_id    String,
    kind        LowCardinality(String),
    label       String,
    at          DateTime64(3, 'UTC'),
    read_at     DateTime64(3, 'UTC'),
    quantity    LowCardinality(String),
    rate        LowCardinality(String),
    value       Decimal(38, 6),
    balance_fen Int64,
    event_id    String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (project_id, meter_id, kind, at, quantity, rate, event_id);
