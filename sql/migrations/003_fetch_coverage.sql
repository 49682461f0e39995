-- Which (symbol, timeframe, New York days) a backfill has fully stored: bars written, features written.
-- Written last in a job, so a job killed at any point leaves no entry and its days are fetched again.
-- An entry only counts while the bars it recorded are still in market_data (see perflab.db.coverage).
CREATE TABLE IF NOT EXISTS fetch_coverage (
    symbol      text        NOT NULL,
    timeframe   text        NOT NULL,
    first_day   date        NOT NULL,
    last_day    date        NOT NULL,
    rows        bigint      NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, first_day, last_day)
);
