-- The plan's phase-3 indexes (Path B, fix 1). Whether they help is measured, not assumed:
-- (symbol, timeframe, time DESC) duplicates what the primary key already serves in reverse.
-- perflab applies this file only when the db.indexes fix is on, and drops the indexes when it is off.
CREATE INDEX IF NOT EXISTS idx_symbol_timeframe_time ON market_data (symbol, timeframe, time DESC);
CREATE INDEX IF NOT EXISTS idx_symbol_timeframe_created ON market_data (symbol, timeframe, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_quant_features_symbol_timeframe ON quant_features (symbol, timeframe, computed_at DESC);
