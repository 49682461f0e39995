-- requires-extension: timescaledb
-- The plan's optional partitioning: market_data becomes a TimescaleDB hypertable chunked by time.
-- perflab applies this only where the server offers timescaledb (and preloads it); elsewhere it says so once
-- and market_data stays a plain table. The primary key (symbol, timeframe, time) includes the time column,
-- as a hypertable requires; migrate_data moves rows already stored into chunks.
CREATE EXTENSION IF NOT EXISTS timescaledb;
SELECT create_hypertable('market_data', 'time', if_not_exists => TRUE, migrate_data => TRUE);
