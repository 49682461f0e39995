"""End to end: all fixes vs the baseline on one preset, and what the instrumentation itself costs.

Targets (issue 6): all fixes >= 10x faster than the baseline on the standard preset (the plan
expected 1.3-1.4x); stage timing + resource sampling cost <= 3% of wall time.

    .venv/bin/python benchmarks/bench_end_to_end.py [--preset standard] [--repeats 3] [--overhead-repeats 7]
"""

from __future__ import annotations

import argparse
import statistics

from perflab.lab import open_lab
from perflab.measure.benchrecord import save_bench
from perflab.measure.compare import compare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-repeats", type=int, default=7)
    args = parser.parse_args()

    lab = open_lab(args.preset)
    try:
        baseline = lab.repeat("none", "baseline", n=args.repeats)
        after = lab.repeat("all", "all fixes", n=args.repeats)
        result = compare(baseline, after)
        # Instrumentation cost: the all-fixes configuration (the shortest run, so the overhead shows most),
        # on and off interleaved so drift hits both equally.
        on, off = [], []
        for _ in range(args.overhead_repeats):
            on.append(lab.backfill("all", label="instrumented", progress=False).wall_seconds)
            off.append(lab.backfill("all", label="uninstrumented", progress=False, instrument=False).wall_seconds)
    finally:
        lab.close()

    speedup = result.total.speedup
    overhead = statistics.median(on) / statistics.median(off) - 1
    print(f"preset {args.preset}: baseline {result.total.before:.2f}s (range {baseline.spread('wall_seconds')}), "
          f"all fixes {result.total.after:.2f}s (range {after.spread('wall_seconds')})")
    print(f"all fixes vs baseline: {speedup:.1f}x faster (target >= 10x; the plan expected 1.3-1.4x) "
          f"-> {'PASS' if speedup >= 10 else 'FAIL'}")
    print(f"instrumentation: on {statistics.median(on):.3f}s vs off {statistics.median(off):.3f}s median of "
          f"{args.overhead_repeats}: {overhead:+.1%} (target <= 3%) -> {'PASS' if overhead <= 0.03 else 'FAIL'}")
    path = save_bench(
        "end_to_end",
        {"speedup": speedup, "baseline_s": result.total.before, "after_s": result.total.after,
         "instrumentation_overhead": overhead, "comparison": result.table().reset_index().to_dict("records")},
        samples={"baseline_wall": baseline.values("wall_seconds"), "after_wall": after.values("wall_seconds"),
                 "instrumented_wall": on, "uninstrumented_wall": off},
        targets={"speedup": ">= 10", "instrumentation_overhead": "<= 0.03"},
        params=vars(args), engine=lab.engine)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
