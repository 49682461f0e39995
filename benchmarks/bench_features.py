"""Features benchmark: loop vs vectorized vs parallel on the standard panel, ratios from one run.

    .venv/bin/python benchmarks/bench_features.py            # 25 symbols x 5 timeframes; loop on 2 symbols
    .venv/bin/python benchmarks/bench_features.py --quick    # the smoke panel, loop on 1 symbol

``loop`` takes ~0.1 ms per bar, so on the full panel (~400k bars) it would run for about a minute
per repeat: it is timed once on a subset of symbols and compared per bar (the fast implementations
run on the same subset too, so those ratios are exactly like for like). Targets (issue 5):
vectorized >= 200x loop and <= 10 ms per symbol; parallel default only where it measures faster.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from perflab.measure.benchrecord import save_bench
from perflab.studies.path_c import FORCED_POOL, PANELS, build_panel, compare_implementations

TARGETS = {"vectorized_speedup_vs_loop_min": 200, "vectorized_ms_per_symbol_max": 10}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke panel (3 symbols x 3 timeframes)")
    parser.add_argument("--loop-symbols", type=int, default=None, help="symbols timed with loop (default 2, quick 1)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    name = "smoke" if args.quick else "standard"
    spec = PANELS[name]
    loop_symbols = args.loop_symbols or (1 if args.quick else 2)

    start = time.perf_counter()
    panel = build_panel(spec)
    print(f"panel {name}: {len(spec.symbols)} symbols x {len(spec.timeframes)} timeframes, {panel.bars} bars "
          f"(built in {time.perf_counter() - start:.1f}s)")
    print(panel.summary().to_string())
    table, facts = compare_implementations(panel, loop_symbols, args.repeats)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(table.drop(columns=["min", "max"]).to_string(index=False))

    full = table[table["panel"] == "full"].set_index("impl")
    vec = full.loc["vectorized"]
    results = {
        "vectorized_speedup_vs_loop": float(vec["speedup_vs_loop"]),
        "vectorized_ms_per_symbol": float(vec["ms_per_symbol"]),
        "parallel_over_vectorized": float(vec["seconds"] / full.loc["parallel", "seconds"]),
        "pool_over_vectorized": float(vec["seconds"] / full.loc[FORCED_POOL, "seconds"]),
        "pool_start_s": facts["pool_start_s"],
        "max_rel_error_vs_loop": facts["max_rel_error_vs_loop"],
    }
    print(f"\nvectorized: {results['vectorized_speedup_vs_loop']:.0f}x loop per bar (target >= 200x), "
          f"{results['vectorized_ms_per_symbol']:.1f} ms per symbol (target <= 10 ms)")
    print(f"process pool on {facts['workers']} workers: {results['pool_over_vectorized']:.2f}x vectorized "
          f"(start-up {facts['pool_start_s']:.2f}s, paid once); 'parallel' as configured "
          f"(pool only with >= {facts['min_cpus_for_pool']} cores and {facts['min_rows_per_worker']} bars per worker): "
          f"{results['parallel_over_vectorized']:.2f}x")
    print(f"every implementation equals loop: worst relative error {facts['max_rel_error_vs_loop']:.1e}")
    path = save_bench("features", results, samples=facts["samples"], targets=TARGETS,
                      params={"panel": name, "loop_symbols": loop_symbols, "repeats": args.repeats,
                              "bars": panel.bars, "table": table.to_dict(orient="records")})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
