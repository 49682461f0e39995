"""The plan's scale in real time: baseline vs all fixes on the ``plan`` preset, against the physical floor.

The ``plan`` preset (25 symbols x 1m/5m/15m/1h/1d over 2024-03-04..2024-03-29, ``time_scale`` 1: 0.5-0.8 s a
request, 2-4 s per symbol/timeframe) runs once with ``--fixes none`` (the baseline: several minutes, it fetches 425
pages one after another and writes ~550,000 rows one ORM flush at a time) and once with ``all``, both through the one
measured backfill (:meth:`perflab.studies.lab.Lab.backfill`), against one simulator and one database. The verdict
on the baseline (:func:`perflab.measure.verdict.classify`) prints as soon as the baseline ends.

The physical floor no pipeline can beat is the largest of: the requests through the preset's rate limit (when it has
one); the longest chain of sequential pages (a job's pages follow each other: the job of the all-fixes run whose
requests cover the most wall time, concurrent ones counted once); psql's ``\\copy`` loading back what the all-fixes
run stored, bars and feature rows alike (exported from the tables, loaded into them emptied; median of 3).
With ``--ablate`` every fix is also dropped from ``all`` one at a time; a fix whose removal makes the
run faster by more than ``--harm-margin`` counts as harmful, and ``all`` minus the harmful fixes runs once more,
reported beside (never instead of) literal ``all``, which the targets judge.

Targets: all fixes >= 50x faster than the baseline, and within 1.5x of the floor.

    .venv/bin/python benchmarks/bench_plan.py                 # the full plan, real time (the baseline: minutes)
    .venv/bin/python benchmarks/bench_plan.py --quick         # 3 symbols x 1 week, latency scaled 0.05: a check
    .venv/bin/python benchmarks/bench_plan.py --ablate        # also all minus each fix, and all minus the harmful
    .venv/bin/python benchmarks/bench_plan.py --preset standard   # the same comparison on another preset
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from perflab.api.ratelimit import rate_limit_floor
from perflab.db.engine import own_database
from perflab.db.psql import psql_copy_stored
from perflab.measure.benchrecord import save_bench
from perflab.measure.results import RunResult
from perflab.measure.verdict import Verdict, classify
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.presets import Preset, get_preset
from perflab.studies.lab import Lab, open_lab

SPEEDUP_TARGET = 50.0
FLOOR_TARGET = 1.5
QUICK = {"symbols": 3, "end": date(2024, 3, 8), "time_scale": 0.05}


@dataclass(frozen=True)
class Floor:
    """The least wall time any pipeline needs for a run, and what sets it."""

    rate_limit_s: float | None
    chain_s: float
    chain_job: str
    chain_requests: int
    rows: int
    feature_rows: int
    copy_bars_s: float
    copy_features_s: float

    @property
    def copy_s(self) -> float:
        """psql \\copy of all the run stored: its bars, then its features."""
        return self.copy_bars_s + self.copy_features_s

    @property
    def seconds(self) -> float:
        return max(self.rate_limit_s or 0.0, self.chain_s, self.copy_s)

    @property
    def bound_by(self) -> str:
        terms = {"rate limit": self.rate_limit_s or 0.0, "longest page chain": self.chain_s,
                 "psql \\copy of the stored rows": self.copy_s}
        return max(terms, key=terms.get)


def plan_preset(quick: bool, name: str = "plan") -> Preset:
    """The ``plan`` preset (or another by ``name``), or with ``quick`` a small slice of it with latency scaled down so
    it runs in seconds."""
    preset = get_preset(name)
    if not quick:
        return preset
    return preset.with_overrides(symbols=preset.symbols[: QUICK["symbols"]], end=min(preset.end, QUICK["end"]),
                                 time_scale=min(preset.time_scale, QUICK["time_scale"]))


def longest_chain(run: RunResult) -> tuple[float, str, int]:
    """The job whose requests kept it waiting longest: the union of its requests' intervals on the wall clock (pages
    that follow each other add up; requests in flight together, like a grouped fetch's days, count once), its name
    and its request count."""
    requests: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for span in run.spans:
        if span["stage"] == "api" and len(span["jobs"]) == 1:
            requests.setdefault(tuple(span["jobs"][0]), []).extend((a, b) for a, b, _ in span["requests"])
    if not requests:
        return 0.0, "-", 0
    job, chain = max(((job, union_seconds(spans)) for job, spans in requests.items()), key=lambda jc: jc[1])
    return chain, " ".join(job), len(requests[job])


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``intervals``."""
    total, reach = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def physical_floor(lab: Lab, run: RunResult) -> Floor:
    """The floor for ``run`` (the lab's last backfill, its rows still stored): rate limit (if any), its longest page
    chain, and psql \\copy loading back its bars and features, now."""
    sim = lab.preset.simulator_config()
    limit = rate_limit_floor(run.requests, sim.rate_limit_per_s, sim.burst) if sim.rate_limit_per_s else None
    chain_s, chain_job, chain_requests = longest_chain(run)
    with tempfile.TemporaryDirectory(prefix="perflab-bench-plan-") as tmp:
        copy = psql_copy_stored(lab.engine, Path(tmp), repeats=3)
    if copy.rows["market_data"] != run.rows_written:
        raise SystemExit(f"bench_plan: the database held {copy.rows['market_data']:,} bars after a run that wrote "
                         f"{run.rows_written:,}")
    return Floor(limit, chain_s, chain_job, chain_requests, copy.rows["market_data"], copy.rows["quant_features"],
                 copy.table_seconds("market_data"), copy.table_seconds("quant_features"))


def ablate(lab: Lab, reference_s: float, margin: float) -> tuple[dict[str, float], list[str]]:
    """Wall seconds of ``all`` minus each fix, and the fixes whose removal beat ``reference_s`` by more than
    ``margin``."""
    walls: dict[str, float] = {}
    for name in sorted(FixSet.parse("all").names):
        walls[name] = lab.backfill(f"all,-{name}", label=f"all -{name}", progress=False).wall_seconds
        print(f"  all -{name:<20} {walls[name]:8.2f} s  ({reference_s / walls[name]:.2f}x of all's speed)", flush=True)
    harmful = [n for n, w in walls.items() if w * (1 + margin) < reference_s]
    return walls, harmful


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['symbols']} symbols x 2024-03-04..{QUICK['end']}, time_scale "
                             f"{QUICK['time_scale']}: checks the harness in seconds (targets are the full plan's)")
    parser.add_argument("--preset", default="plan",
                        help="another preset through the same comparison (e.g. standard, to set beside the plan)")
    parser.add_argument("--ablate", action="store_true", help="also run all minus each fix, and all minus the harmful")
    parser.add_argument("--harm-margin", type=float, default=0.10,
                        help="a fix is harmful when all without it is faster by more than this fraction")
    args = parser.parse_args(argv)

    preset = plan_preset(args.quick, args.preset)
    name = ("plan" if args.preset == "plan" else f"plan_{args.preset}") + ("_quick" if args.quick else "")
    print(f"preset {preset.name}{' (quick)' if args.quick else ''}: {len(preset.symbols)} symbols x "
          f"{', '.join(preset.timeframes)} x {preset.start}..{preset.end}, time_scale {preset.time_scale:g}; "
          f"{preset.compression_note}", flush=True)
    lab = open_lab(preset)
    try:
        print(f"baseline (--fixes none), one run: {'seconds' if args.quick else 'several minutes'} ...", flush=True)
        baseline = lab.backfill("none", label="baseline", progress=False)
        verdict = classify(baseline)
        print(f"baseline: {baseline.wall_seconds:.1f} s, {baseline.requests} requests, {baseline.rows_written:,} rows; "
              f"verdict {verdict}", flush=True)
        after = lab.backfill("all", label="all fixes", progress=False)
        print(f"all fixes ({after.params.get('fixes')}): {after.wall_seconds:.2f} s, {after.requests} requests, "
              f"{after.rows_written:,} rows; busy seconds "
              + ", ".join(f"{k} {v:.2f}" for k, v in after.stage_seconds.items()), flush=True)
        floor = physical_floor(lab, after)
        missed = report(name, args, preset, baseline, verdict, after, floor, lab)
        if args.ablate:
            report_ablation(name, args, lab, baseline, after, floor)
    finally:
        lab.close()
    return 0 if not missed else 1


def report(name: str, args: argparse.Namespace, preset: Preset, baseline: RunResult, verdict: Verdict,
           after: RunResult, floor: Floor, lab: Lab) -> list[str]:
    """Print the speed-up and the floor, record them, and return the targets missed."""
    speedup = baseline.wall_seconds / after.wall_seconds
    closeness = after.wall_seconds / floor.seconds
    limit = (f"{floor.rate_limit_s:.2f} s through the rate limit" if floor.rate_limit_s is not None
             else "no rate limit")
    print(f"physical floor: {floor.seconds:.2f} s, set by the {floor.bound_by} = max({limit}; longest page chain "
          f"{floor.chain_s:.2f} s ({floor.chain_job}, {floor.chain_requests} requests); "
          f"psql \\copy of the {floor.rows:,} bars {floor.copy_bars_s:.2f} s + its {floor.feature_rows:,} feature rows "
          f"{floor.copy_features_s:.2f} s = {floor.copy_s:.2f} s)")
    print(f"all fixes vs baseline: {baseline.wall_seconds:.1f} s -> {after.wall_seconds:.2f} s = {speedup:.1f}x "
          f"(target >= {SPEEDUP_TARGET:g}x) -> {'PASS' if speedup >= SPEEDUP_TARGET else 'FAIL'}")
    print(f"all fixes vs the floor: {closeness:.2f}x the floor (target <= {FLOOR_TARGET:g}x) -> "
          f"{'PASS' if closeness <= FLOOR_TARGET else 'FAIL'}; the best any pipeline could do is "
          f"{baseline.wall_seconds / floor.seconds:.0f}x")
    checks = {"speedup": speedup >= SPEEDUP_TARGET, "within_floor": closeness <= FLOOR_TARGET,
              "no_failed_jobs": not (baseline.failures or after.failures)}
    for run in (baseline, after):
        for line in run.failure_summary():
            print(f"{run.label}: {line}")
    missed = [k for k, ok in checks.items() if not ok]
    print("targets " + ("met" if not missed else f"NOT met: {', '.join(missed)}"), flush=True)
    results = {
        "baseline_s": baseline.wall_seconds, "after_s": after.wall_seconds, "speedup": speedup,
        "floor_s": floor.seconds, "floor_bound_by": floor.bound_by, "floor": asdict(floor),
        "after_over_floor": closeness, "verdict": str(verdict), "verdict_path": verdict.path,
        "verdict_shares": verdict.shares, "all_fixes": after.params.get("fixes"),
        "stage_seconds": {"baseline": baseline.stage_seconds, "after": after.stage_seconds},
        "requests": {"baseline": baseline.requests, "after": after.requests},
        "rows": {"baseline": baseline.rows_written, "after": after.rows_written},
        "failed_jobs": {"baseline": baseline.failures, "after": after.failures},
        "checks": checks,
    }
    samples = {"after_job_latency_sums_s": [sum(j.latencies) for j in after.jobs],
               "after_request_latencies_s": [x for j in after.jobs for x in j.latencies]}
    targets = {"speedup": f">= {SPEEDUP_TARGET:g}", "after_over_floor": f"<= {FLOOR_TARGET:g}"}
    params = {**vars(args), "preset": preset.to_dict()}
    print(f"saved {save_bench(name, results, samples=samples, targets=targets, params=params, engine=lab.engine)}",
          flush=True)
    return missed


def report_ablation(name: str, args: argparse.Namespace, lab: Lab, baseline: RunResult, after: RunResult,
                    floor: Floor) -> None:
    """All minus each fix, then all minus the harmful ones (if any), printed and recorded beside the main record."""
    # The first all-fixes run follows the baseline's ten minutes of writes (the server may still be flushing them):
    # all runs again, and the faster of the two is the reference a fix must beat to count as harmful.
    again = lab.backfill("all", label="all fixes (again)", progress=False)
    reference_s = min(after.wall_seconds, again.wall_seconds)
    print(f"ablation: all again {again.wall_seconds:.2f} s (first {after.wall_seconds:.2f} s); all minus each fix "
          f"(harmful: faster than {reference_s:.2f} s by > {args.harm_margin:.0%})", flush=True)
    walls, harmful = ablate(lab, reference_s, args.harm_margin)
    pruned = None
    if harmful:
        pruned = lab.backfill(",".join(["all", *(f"-{n}" for n in harmful)]), label="all minus harmful",
                              progress=False)
        print(f"all minus the harmful ({', '.join(harmful)}; not the target's configuration): "
              f"{pruned.wall_seconds:.2f} s = {baseline.wall_seconds / pruned.wall_seconds:.1f}x the baseline, "
              f"{pruned.wall_seconds / floor.seconds:.2f}x the floor")
    else:
        print(f"no fix measured harmful: dropping any one of them did not beat all by > {args.harm_margin:.0%}")
    results = {"all_s": after.wall_seconds, "all_again_s": again.wall_seconds, "all_minus_one_s": walls,
               "harmful": harmful,
               "all_minus_harmful_s": pruned.wall_seconds if pruned is not None else None,
               "baseline_s": baseline.wall_seconds, "floor_s": floor.seconds}
    path = save_bench(f"{name}_ablation", results, params={**vars(args), "runs_per_configuration": 1},
                      targets={"harmful": f"all without the fix faster than all by > {args.harm_margin:.0%}"},
                      engine=lab.engine)
    print(f"saved {path}")


if __name__ == "__main__":
    with own_database("perflab_bench_plan"):  # it empties the tables run after run: not under another run
        raise SystemExit(main())
