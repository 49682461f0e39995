"""What-if predictions against reality: each stage made faster for real, its replayed prediction beside the run.

For each round (``--pairs``), on the preset's timeframes and days (all its symbols, or at full latency the first three;
``--symbols`` says otherwise): the baseline;
the baseline against a second simulator at half the latency (api 2x); ``db.copy`` (the db stage k times faster, k
measured); ``db.copy,compute.vectorized`` (compute k times faster). Each faster run's wall time is set against the
replay of the run before it with that stage that much faster (:func:`perflab.studies.baseline.check_what_if`, the
check notebook 01 shows). Target (issue 12): the median error within 15% for every stage. The plan preset runs in
real time (2-4 s per symbol/timeframe), so ``--preset plan`` is the plan-shaped check: minutes a round.

    .venv/bin/python benchmarks/bench_whatif.py                       # standard, 3 rounds
    .venv/bin/python benchmarks/bench_whatif.py --preset plan --pairs 1
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from perflab.db.engine import own_database
from perflab.measure.benchrecord import save_bench
from perflab.studies import baseline as study
from perflab.studies.lab import open_lab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the four runs")
    parser.add_argument("--symbols", type=int, help="the preset's first N symbols (default: all of a preset with "
                                                    "compressed latency, 3 at full latency)")
    args = parser.parse_args()
    lab = open_lab(args.preset)
    try:
        print(f"preset {lab.preset.name}: {lab.preset.compression_note}", flush=True)
        checks = study.check_what_if(lab, args.pairs, args.symbols)
        table = study.check_table(checks)
        print(table.to_string(float_format=lambda x: f"{x:.3f}"))
        for c in checks:
            print(f"  {c.stage} k={c.k:.2f}: predicted {c.predicted_s:.2f} s, measured {c.measured_s:.2f} s "
                  f"({c.error:+.1%})")
        passed = bool(table[f"within {study.TOLERANCE:.0%}"].all())
        print(f"every stage within {study.TOLERANCE:.0%}: {'PASS' if passed else 'FAIL'}")
        path = save_bench(f"whatif_{lab.preset.name}", {"table": table.reset_index().to_dict("records"),
                                                         "passed": passed},
                          samples={"checks": [{**asdict(c), "error": c.error} for c in checks]},
                          targets={"error (median)": f"within {study.TOLERANCE:.0%}"}, params=vars(args),
                          engine=lab.engine)
        print(f"saved {path}")
    finally:
        lab.close()
    return 0 if passed else 1


if __name__ == "__main__":
    with own_database("perflab_bench_whatif"):  # it empties the tables run after run: not under another run
        raise SystemExit(main())
