-- perf_runs keeps each run's whole result JSON; these keys find the runs of one configuration (workload, fixes,
-- rollout, preset) measured on one environment (CPU, Python, database server), so `perflab check` can compare a
-- new run with its history in one indexed query. Rows stored before this migration have no keys and are not used.
ALTER TABLE perf_runs ADD COLUMN IF NOT EXISTS config_key text;
ALTER TABLE perf_runs ADD COLUMN IF NOT EXISTS environment_key text;
CREATE INDEX IF NOT EXISTS perf_runs_by_config ON perf_runs (config_key, environment_key, started_at);
