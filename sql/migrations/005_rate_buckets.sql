-- One token bucket per name shared by every process that paces against it (perflab.db.rate_bucket): the workers
-- of a cluster take their request tokens here, so one API key's rate limit holds for the whole cluster. `rate` is
-- the pace now (cut on a 429, recovered toward `ceiling` as tokens are taken); `tokens` may be negative (tokens
-- reserved ahead: the taker sleeps -tokens/rate seconds); the refill is timed on the database's clock, one clock
-- for all workers. UNLOGGED: a token is a commit, and a bucket's balance is worth no WAL flush (after a crash the
-- table is empty and the next pacer starts its bucket again, full).
CREATE UNLOGGED TABLE IF NOT EXISTS rate_buckets (
    name       text             PRIMARY KEY,
    ceiling    double precision NOT NULL CHECK (ceiling > 0),
    rate       double precision NOT NULL CHECK (rate > 0),
    burst      double precision NOT NULL CHECK (burst >= 1),
    tokens     double precision NOT NULL,
    updated_at timestamptz      NOT NULL DEFAULT clock_timestamp()
);
