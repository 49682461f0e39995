"""Volume: the large preset (25 symbols x 1m..1d over 2023, ~7.2 million bars) with all fixes, streamed (db.stream).

Targets (issue 13): peak RSS of the backfill process <= 500 MB; its peak over the long range <= 1.25x its peak over
one month (memory does not grow with the range); rows stored per second of the whole backfill (bars and feature rows)
>= 0.8x the rows/s of psql's ``\\copy`` loading the same rows (exported from the tables) into the same emptied
tables, measured right after it in the same run. The backfill stores a feature row for every bar, so the reference
loads both; the bars alone against psql loading the bars alone are printed beside it.

Each backfill runs in a process of its own (with its own simulator), so its peak RSS (``ru_maxrss``) is its alone;
the sampler's peak of the process tree (simulator and any worker pool included) is printed beside it. The runs use a
database of their own (``perflab_bench_large`` on the configured server), dropped at the end.

    .venv/bin/python benchmarks/bench_large.py                # January vs the whole year (several minutes)
    .venv/bin/python benchmarks/bench_large.py --months 3     # January vs January-March
    .venv/bin/python benchmarks/bench_large.py --quick        # January vs January-February
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

from perflab.db.engine import drop_database, get_engine, scratch_database
from perflab.db.psql import psql_copy_stored
from perflab.measure.benchrecord import save_bench
from perflab.pipeline.presets import get_preset

DATABASE = "perflab_bench_large"
PEAK_RSS_MB = 500.0
GROWTH = 1.25
X_PSQL_COPY = 0.8


@dataclass
class Span:
    """One backfill of the large shape over [start, end], measured in its own process."""

    start: str
    end: str
    wall_s: float
    rows: int
    feature_rows: int
    requests: int
    failures: int
    peak_rss_mb: float  # the backfill process alone (ru_maxrss)
    tree_peak_rss_mb: float  # the sampler's peak of the process tree: the simulator and any worker pool too
    stages: dict

    @property
    def rows_per_s(self) -> float:
        """Bars and feature rows stored per second of the whole backfill."""
        return (self.rows + self.feature_rows) / self.wall_s


def month_end(months: int) -> date:
    """The last day of the ``months``-th month of 2023 (12: December 31)."""
    first_after = date(2023 + months // 12, months % 12 + 1, 1)
    return first_after - timedelta(days=1)


def run_child(start: date, end: date, fixes: str, url: str) -> Span:
    """Backfill [start, end] in a fresh process and read back what it measured (its last stdout line)."""
    env = {**os.environ, "PERFLAB_DATABASE_URL": url}
    done = subprocess.run([sys.executable, __file__, "--child", start.isoformat(), end.isoformat(), "--fixes", fixes],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the backfill of {start}..{end} failed:\n{done.stderr[-2000:]}")
    return Span(**json.loads(done.stdout.strip().splitlines()[-1]))


def child(start: str, end: str, fixes: str) -> int:
    """In the child: one measured backfill of the large shape over [start, end] from empty tables."""
    from perflab.pipeline.fixes import FixSet
    from perflab.pipeline.measured import measured_backfill
    from perflab.pipeline.scheduler import Workload
    from perflab.simulator import start_simulator

    preset = get_preset("large").with_overrides(start=date.fromisoformat(start), end=date.fromisoformat(end))
    engine = get_engine()
    with start_simulator(preset.simulator_config()) as sim:
        result = measured_backfill(Workload.from_preset(preset), FixSet.parse(fixes), engine, preset=preset,
                                   base_url=sim.url, fresh=True, store=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    span = Span(start, end, result.wall_seconds, result.rows_written, sum(j.feature_rows for j in result.jobs),
                result.requests, result.failures, peak, result.resources["rss_peak_mb"], result.stage_seconds)
    print(json.dumps(asdict(span)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=12, help="the long run covers the first N months of 2023")
    parser.add_argument("--quick", action="store_true", help="January vs January-February (--months 2)")
    parser.add_argument("--fixes", default="all", help="the fixes of both runs (default: all, db.stream included)")
    parser.add_argument("--child", nargs=2, metavar=("FROM", "TO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.fixes)
    months = 2 if args.quick else args.months
    if not 2 <= months <= 12:
        parser.error("--months must be 2 to 12")

    admin = get_engine()
    url = scratch_database(admin, DATABASE)
    engine = get_engine(url)
    try:
        start = date(2023, 1, 1)
        month = run_child(start, month_end(1), args.fixes, url)
        print(f"month {month.start}..{month.end}: {month.rows:,} bars in {month.wall_s:.1f}s, "
              f"peak RSS {month.peak_rss_mb:.0f} MB", flush=True)
        long = run_child(start, month_end(months), args.fixes, url)
        print(f"range {long.start}..{long.end}: {long.rows:,} bars in {long.wall_s:.1f}s, "
              f"peak RSS {long.peak_rss_mb:.0f} MB", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            copy = psql_copy_stored(engine, Path(tmp))
    finally:
        engine.dispose()
        drop_database(admin, DATABASE)

    ratio = long.rows_per_s / copy.rows_per_s
    bars_ratio = (long.rows / long.wall_s) / (copy.rows["market_data"] / copy.table_seconds("market_data"))
    growth = long.peak_rss_mb / month.peak_rss_mb
    checks = {
        f"peak RSS {long.peak_rss_mb:.0f} MB <= {PEAK_RSS_MB:.0f} MB": long.peak_rss_mb <= PEAK_RSS_MB,
        f"{months} months / 1 month peak RSS {growth:.2f}x <= {GROWTH}x": growth <= GROWTH,
        f"backfill {long.rows_per_s:,.0f} rows/s (bars and features) = {ratio:.2f}x psql \\copy of the same rows "
        f"({copy.rows_per_s:,.0f} rows/s) >= {X_PSQL_COPY}x": ratio >= X_PSQL_COPY,
    }
    complete = (long.failures == 0 and month.failures == 0
                and copy.rows == {"market_data": long.rows, "quant_features": long.feature_rows})
    busy = ", ".join(f"{k} {v:.0f}" for k, v in long.stages.items())
    print(f"\nfixes {args.fixes}; {long.rows:,} bars and {long.feature_rows:,} feature rows over {months} months, "
          f"{long.requests:,} requests, {long.failures} failed jobs; busy seconds {busy}")
    print(f"process tree peak (simulator included): month {month.tree_peak_rss_mb:.0f} MB, "
          f"range {long.tree_peak_rss_mb:.0f} MB")
    print(f"psql \\copy: {copy.rows['market_data']:,} bars {copy.table_seconds('market_data'):.1f}s + "
          f"{copy.rows['quant_features']:,} feature rows {copy.table_seconds('quant_features'):.1f}s; the bars alone: "
          f"backfill {long.rows / long.wall_s:,.0f} bars/s = {bars_ratio:.2f}x psql loading the bars alone")
    for label, ok in checks.items():
        print(f"{label}: {'PASS' if ok else 'FAIL'}")
    if not complete:
        print("FAIL: the runs did not store every bar (failed jobs or a row count that differs)")
    path = save_bench(
        "large", {"month": asdict(month), "range": asdict(long), "psql_copy_rows": copy.rows,
                  "psql_copy_s": copy.seconds,
                  "psql_copy_rows_per_s": copy.rows_per_s, "backfill_rows_per_s": long.rows_per_s, "x_psql_copy": ratio,
                  "bars_x_psql_copy_bars": bars_ratio,
                  "rss_growth": growth, "checks": checks, "complete": complete},
        samples={"wall_s": [month.wall_s, long.wall_s], "peak_rss_mb": [month.peak_rss_mb, long.peak_rss_mb]},
        targets={"peak_rss_mb": f"<= {PEAK_RSS_MB}", "rss_growth": f"<= {GROWTH}", "x_psql_copy": f">= {X_PSQL_COPY}"},
        params={"months": months, "fixes": args.fixes, "quick": args.quick}, engine=admin)
    print(f"saved {path}")
    return 0 if complete and all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
