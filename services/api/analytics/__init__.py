"""ClickHouse analytics: the sink that fills the analytics tables, and the report queries."""
