"""DB writes: every strategy on the same N rows against psql's ``\\copy`` of those rows (the physical reference).

Targets (issue 4): the fastest strategy >= 1.0x ``\\copy``; the idempotent default (the db.copy fix's writer)
>= 0.8x ``\\copy``; both >= 100x ``orm_row`` (the plan's baseline). Strategies run in interleaved rounds so
drift on a shared machine hits all alike; slow strategies are timed on the first rows only (``caps``). Also
times the overlap path (re-writing stored rows, merged through staging) and the batch-size sweep.

    .venv/bin/python benchmarks/bench_db.py [--quick] [--rows N] [--repeats R]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from perflab.db.engine import get_engine, own_database
from perflab.db.migrate import apply_schema, set_indexes
from perflab.db.writers import WRITERS
from perflab.measure.benchrecord import save_bench
from perflab.pipeline.fixes import FixSet
from perflab.studies.path_b import Timing, find_optimal_batch_size, psql_copy, synthetic_bars, time_write

SWEEP_SIZES = (100, 250, 500, 1000, 2000, 5000, 10_000, 20_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30k rows, 2 rounds: a minute-or-less look")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    rows = args.rows or (30_000 if args.quick else 200_000)
    repeats = args.repeats or (2 if args.quick else 3)
    caps = {"orm_row": 500 if args.quick else 2_000, "orm_bulk": 5_000 if args.quick else 20_000,
            "execute_values": 10_000 if args.quick else 50_000}
    default = FixSet.parse("db.copy").settings().writer

    engine = get_engine()
    apply_schema(engine)
    set_indexes(engine, False)
    bars = synthetic_bars(rows)
    samples: dict[str, list[float]] = {name: [] for name in [*WRITERS, "psql \\copy"]}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for name in WRITERS:
                subset = bars.iloc[:caps.get(name, rows)]
                samples[name] += time_write(engine, name, subset, repeats=1).seconds
            samples["psql \\copy"] += psql_copy(engine, bars, Path(tmp) / "bars.csv", repeats=1).seconds
    timings = {name: Timing(caps.get(name, rows), secs) for name, secs in samples.items()}
    overlap = {name: time_write(engine, name, bars.iloc[:caps.get(name, rows)], repeats=1, rewrite=True)
               for name in WRITERS}
    sweep = find_optimal_batch_size(engine, bars.iloc[:min(rows, 100_000)], default, SWEEP_SIZES,
                                    repeats=1 if args.quick else 2)

    ref = timings["psql \\copy"].rows_per_s
    base = timings["orm_row"].rows_per_s
    table = pd.DataFrame([{**t.row(), "writer": name, "x_psql_copy": t.rows_per_s / ref,
                           "x_orm_row": t.rows_per_s / base,
                           "overlap_rows_per_s": overlap[name].rows_per_s if name in overlap else np.nan}
                          for name, t in timings.items()]).set_index("writer")
    pd.set_option("display.width", 160)
    print(f"{rows:,} rows ({repeats} interleaved rounds; capped: {caps}); shared, noisy machine\n")
    print(table.to_string(float_format=lambda x: f"{x:,.2f}"))
    fastest = table.drop(index="psql \\copy")["rows_per_s"].idxmax()
    checks = {
        f"fastest ({fastest}) >= 1.0x \\copy": table.loc[fastest, "x_psql_copy"] >= 1.0,
        f"default ({default}) >= 0.8x \\copy": table.loc[default, "x_psql_copy"] >= 0.8,
        f"fastest >= 100x orm_row ({table.loc[fastest, 'x_orm_row']:,.0f}x)": table.loc[fastest, "x_orm_row"] >= 100,
        f"default >= 100x orm_row ({table.loc[default, 'x_orm_row']:,.0f}x)": table.loc[default, "x_orm_row"] >= 100,
    }
    print()
    for label, ok in checks.items():
        print(f"{label}: {'PASS' if ok else 'FAIL'}")
    print(f"\nbatch-size sweep ({default}, {len(bars.iloc[:100_000]):,} rows): best {sweep.best} "
          f"(db.batch_size fix uses {FixSet.parse('db.batch_size').settings().batch_size})")
    print(sweep.curve["rows_per_s"].to_string(float_format=lambda x: f"{x:,.0f}"))
    path = save_bench(
        "db", {"strategies": table.reset_index().to_dict("records"), "fastest": fastest, "default": default,
               "checks": {k: bool(v) for k, v in checks.items()}, "sweep_best": sweep.best,
               "sweep": sweep.curve.reset_index().to_dict("records")},
        samples={name: t.seconds for name, t in timings.items()},
        targets={"fastest_x_psql_copy": ">= 1.0", "default_x_psql_copy": ">= 0.8", "x_orm_row": ">= 100"},
        params={"rows": rows, "repeats": repeats, "caps": caps, "quick": args.quick}, engine=engine)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    with own_database("perflab_bench_db"):  # it empties the tables run after run: not under another run
        raise SystemExit(main())
