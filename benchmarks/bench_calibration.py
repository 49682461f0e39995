"""Calibration: the false-positive rate and the power of ``perflab compare``'s significance test, on this machine.

Targets (issue 12): at the default repeats per side (``calibration.REPEATS``, 30), with before and after runs
interleaved, an A/A comparison (one configuration against itself) is called significant at most 5% of the time, and
a planted 10% slowdown is detected at least 80% of the time. The same figures with the runs of each side taken in
sequence are measured and printed beside them, not judged: on a machine whose speed drifts from one block of runs to
the next, that drift is a real difference between the blocks, and no test of the runs alone tells it from a change.

One configuration (default: the smoke preset with ``db.copy``, against the simulator) runs ``--sequence-rounds`` rounds
of plain and slowed blocks in sequence, then ``--rounds`` interleaved rounds (see ``perflab.measure.calibration``); 20
interleaved rounds, so one false positive is 5%, not the 8% of 12. A
slowed run's first API fetch sleeps ``--effect`` (10%) of the recent plain runs' median wall time.
The result, with every run's raw timings, the machine's load, the environment and the commit, is a new
``.perflab/bench/calibration-<time>.json``; every comparison's footer quotes the newest one. Exit status 1 when a
target is missed.

    .venv/bin/python benchmarks/bench_calibration.py [--preset smoke] [--fixes db.copy] [--rounds 20]
        [--sequence-rounds 6] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import deque

from sqlalchemy.engine import Engine

from perflab.db.engine import get_engine, own_database
from perflab.db.migrate import apply_schema, reset_data
from perflab.errors import PerflabError
from perflab.measure.calibration import (
    EFFECT,
    REPEATS,
    TARGET_FALSE_POSITIVE_RATE,
    TARGET_POWER,
    Calibration,
    Round,
    analyze,
    repeats_needed,
    save_calibration,
)
from perflab.pipeline.fixes import FixSet, client_for
from perflab.pipeline.presets import Preset, get_preset
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.simulator import start_simulator

WARMUP_RUNS = 2
"""Discarded first runs: they pay for connections, caches and the schema check once."""


class SlowedSource:
    """An API client whose first fetch after :meth:`plant` sleeps ``extra_s``: the planted slowdown (calibration only).

    One sleep per run, not one per fetch: on a busy machine every wake-up waits for a CPU, which would add more than
    the sleep itself."""

    def __init__(self, client) -> None:
        self.client, self.extra_s, self.pending = client, 0.0, 0.0

    def plant(self, extra_s: float) -> None:
        self.extra_s = self.pending = extra_s

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def get_aggregates(self, *args, **kwargs):
        if self.pending:
            time.sleep(self.pending)
            self.pending = 0.0
        return self.client.get_aggregates(*args, **kwargs)

    def close(self) -> None:
        self.client.close()


def run_study(preset: Preset, fixes: FixSet, *, rounds: int, sequence_rounds: int, repeats: int, effect: float,
              engine: Engine
              ) -> tuple[list[list[float]], list[list[float]], list[Round], list[dict]]:
    """Warm-up runs, ``sequence_rounds`` x (a plain block, a slowed block), then ``rounds`` interleaved rounds: the
    wall times of each, and every run's record."""
    workload = Workload.from_preset(preset)
    recent: deque[float] = deque(maxlen=2 * repeats)  # the latest plain walls: what a slowed run adds 10% of
    runs: list[dict] = []
    with start_simulator(preset.simulator_config()) as sim:
        source = SlowedSource(client_for(fixes.settings(), sim.url, rate_limit_per_s=preset.rate_limit_per_s))

        def run(kind: str, phase: str, round_: int) -> float:
            source.plant(effect * statistics.median(recent) if kind == "slowed" else 0.0)
            reset_data(engine)
            result = run_backfill(workload, source, engine, fixes, label=f"calibration {kind}",
                                  params={"preset": preset.name}, time_scale=preset.time_scale)
            if result.failures:
                raise PerflabError("a calibration run failed, so its timing means nothing: "
                                   + "; ".join(result.failure_summary()))
            if kind != "slowed":
                recent.append(result.wall_seconds)
            runs.append({"phase": phase, "round": round_, "kind": kind, "wall_seconds": result.wall_seconds,
                         "stage_seconds": result.stage_seconds, "planted_s": source.extra_s,
                         "load_average": os.getloadavg()[0]})
            return result.wall_seconds

        try:
            for _ in range(WARMUP_RUNS):
                run("warm-up", "warm-up", -1)
            base, slowed = [], []
            for i in range(sequence_rounds):
                base.append([run("plain", "sequence", i) for _ in range(repeats)])
                slowed.append([run("slowed", "sequence", i) for _ in range(repeats)])
                _say("in sequence", i, sequence_rounds, base[-1], slowed[-1])
            interleaved = []
            for i in range(rounds):
                sides: dict[str, list[float]] = {"a": [], "b": [], "slowed": []}
                for k in range(repeats):
                    order = ["a", "b", "slowed"][k % 3:] + ["a", "b", "slowed"][:k % 3]  # each side first in turn
                    for side in order:
                        sides[side].append(run("slowed" if side == "slowed" else "plain", "interleaved", i))
                interleaved.append(Round(**sides))
                _say("interleaved", i, rounds, sides["a"] + sides["b"], sides["slowed"])
        finally:
            source.close()
    return base, slowed, interleaved, runs


def _report(order: str, fp: float, power: float, aa: int, planted: int, cal: Calibration, judged: bool) -> None:
    def verdict(ok: bool) -> str:
        return ("PASS" if ok else "FAIL") if judged else "reported, not judged"

    print(f"{order}: false-positive rate {fp:.0%} of {aa} A/A comparisons ({cal.repeats} vs {cal.repeats} runs; "
          f"target <= {TARGET_FALSE_POSITIVE_RATE:.0%}) -> {verdict(fp <= TARGET_FALSE_POSITIVE_RATE)}; "
          f"power {power:.0%} of {planted} planted {cal.effect:.0%} slowdowns (target >= {TARGET_POWER:.0%}) -> "
          f"{verdict(power >= TARGET_POWER)}")


def _say(phase: str, i: int, rounds: int, plain: list[float], slowed: list[float]) -> None:
    b, s = statistics.median(plain), statistics.median(slowed)
    print(f"{phase} {i + 1}/{rounds}: plain {b:.3f}s, slowed {s:.3f}s ({s / b - 1:+.1%})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--fixes", default="db.copy")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds: 3 x repeats runs each")
    parser.add_argument("--sequence-rounds", type=int, default=6,
                        help="rounds in sequence (reported, not judged): 2 x repeats runs each")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per block: the repeats being calibrated")
    parser.add_argument("--effect", type=float, default=EFFECT, help="the planted slowdown, a fraction of wall time")
    args = parser.parse_args()
    if args.rounds < 2 or args.sequence_rounds < 2 or args.repeats < 1 or args.effect <= 0:
        raise SystemExit("bench_calibration: need --rounds and --sequence-rounds >= 2, --repeats >= 1, --effect > 0")

    preset = get_preset(args.preset)
    fixes = FixSet.parse(args.fixes)
    engine = get_engine()
    apply_schema(engine)
    started = time.monotonic()
    base, slowed, rounds, runs = run_study(preset, fixes, rounds=args.rounds, sequence_rounds=args.sequence_rounds,
                                           repeats=args.repeats,
                                           effect=args.effect, engine=engine)
    cal = analyze(base, slowed, rounds, effect=args.effect)
    plain = [x for block in base for x in block] + [x for r in rounds for x in r.a + r.b]
    need, need_effect = repeats_needed(0.05, plain), repeats_needed(args.effect, plain)
    print(f"preset {preset.name}, fixes {fixes.spec}: {len(runs)} runs in {time.monotonic() - started:.0f}s, "
          f"run-to-run spread {cal.run_cv:.1%}")
    _report("in sequence", cal.false_positive_rate, cal.power, cal.sequential_comparisons - 1,
            cal.sequential_comparisons, cal, judged=False)
    _report("interleaved", cal.false_positive_rate_interleaved, cal.power_interleaved, cal.interleaved_comparisons,
            cal.interleaved_comparisons, cal, judged=True)
    print(f"order shuffled ({cal.resamples} random draws from the pooled runs): false-positive rate "
          f"{cal.false_positive_rate_resampled:.1%}, power {cal.power_resampled:.1%}; the planting slowed runs by "
          f"{cal.realized_effect:+.1%} (median)")
    print(need_effect)
    print(need)
    path = save_calibration(cal, base, slowed, rounds, runs=runs, engine=engine,
                            params={**vars(args), "warmup_runs": WARMUP_RUNS,
                                    "workload": Workload.from_preset(preset).to_dict(),
                                    "repeats_needed_5pct": need.repeats,
                                    "repeats_needed_effect": need_effect.repeats})
    print(f"saved {path}")
    return 0 if cal.passed else 1


if __name__ == "__main__":
    try:
        with own_database("perflab_bench_calibration"):  # it empties the tables run after run
            sys.exit(main())
    except PerflabError as exc:
        print(f"bench_calibration: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
