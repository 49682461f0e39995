-- perflab's base schema. Applied by perflab.db.migrate on every start; every statement is idempotent.

CREATE TABLE IF NOT EXISTS market_data (
    symbol       text             NOT NULL,
    timeframe    text             NOT NULL,
    time         timestamptz      NOT NULL,
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision NOT NULL,
    vwap         double precision,
    transactions bigint,
    created_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, time)
);

CREATE TABLE IF NOT EXISTS quant_features (
    symbol            text        NOT NULL,
    timeframe         text        NOT NULL,
    time              timestamptz NOT NULL,
    log_return        double precision,
    vol_short         double precision,
    vol_long          double precision,
    vol_ratio         double precision,
    range_high        double precision,
    range_low         double precision,
    dist_high         double precision,
    dist_low          double precision,
    range_position    double precision,
    higher_highs      double precision,
    lower_lows        double precision,
    trend_slope       double precision,
    efficiency_ratio  double precision,
    vol_regime        text,
    trend_regime      text,
    computed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe, time)
);

CREATE TABLE IF NOT EXISTS perf_runs (
    run_id       text        PRIMARY KEY,
    label        text        NOT NULL,
    preset       text,
    fixes        text,
    started_at   timestamptz NOT NULL,
    wall_seconds double precision NOT NULL,
    result       jsonb       NOT NULL
);
