"""The ``perflab`` command: argument parsing and clear one-line errors; the work lives in the modules."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from perflab.errors import PerflabError
from perflab.pipeline.presets import PRESETS
from perflab.redact import redact


def cmd_run(args: argparse.Namespace) -> int:
    from perflab.pipeline.presets import get_preset
    from perflab.report.suite import REPORTS_DIR, discover_notebooks, run_suite, select_notebooks

    notebooks = discover_notebooks()
    only = args.only if args.only is not None else ",".join(get_preset(args.preset).suite) or None
    if only is not None and only != "all":
        notebooks = select_notebooks(only, notebooks)
        if args.only is None:
            print(f"preset {args.preset}: notebooks {only} (its default; --only all runs every notebook)")
    suite = run_suite(args.preset, reports_dir=Path(args.reports or REPORTS_DIR), notebooks=notebooks,
                      timeout=args.timeout)
    print(f"index: {suite.index}")
    return 0 if suite.ok else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from perflab.pipeline.presets import get_preset
    from perflab.simulator import start_simulator
    from perflab.simulator.lifeline import exit_on_sigterm

    exit_on_sigterm()  # SIGTERM stops the simulator on the way out; SIGKILL leaves that to its lifeline
    config = get_preset(args.preset).simulator_config(seed=args.seed)
    with start_simulator(config, host="127.0.0.1", port=args.port) as sim:
        print(sim.url, flush=True)
        try:
            sim.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from perflab.pipeline.fixes import FixSet
    from perflab.pipeline.measured import measured_backfill
    from perflab.pipeline.presets import get_preset
    from perflab.pipeline.scheduler import Workload
    from perflab.simulator import start_simulator

    preset = get_preset(args.preset)
    workload = Workload.parse(
        args.symbols.split(",") if args.symbols is not None else preset.symbols,
        args.timeframes.split(",") if args.timeframes else preset.timeframes,
        args.start or preset.start, args.end or preset.end)
    fixes = FixSet.parse(args.fixes) if args.fixes is not None else FixSet.from_env()
    if args.rollout is not None:
        fixes = FixSet.parse(fixes.names, rollout=args.rollout)
    if fixes.rollout < 1 and fixes.run_wide():
        print(f"rollout {fixes.rollout:g} cannot split {', '.join(fixes.run_wide())}: every symbol gets them",
              file=sys.stderr)
    if args.cluster is not None:  # said before a simulator or a cluster starts
        from perflab.pipeline.cluster import check_cluster, check_fixes

        check_cluster(args.cluster)
        check_fixes(fixes)
    with ExitStack() as stack:
        base_url = args.base_url
        if args.simulator:
            base_url = stack.enter_context(start_simulator(preset.simulator_config())).url
        if args.cluster is not None:
            from perflab.pipeline.cluster import measured_cluster_backfill

            result = measured_cluster_backfill(workload, fixes, preset=preset, base_url=base_url,
                                               cluster=args.cluster, n_workers=args.cluster_workers,
                                               label=args.label, progress=sys.stderr.isatty(), fresh=args.fresh,
                                               trace=args.trace)
        else:
            result = measured_backfill(workload, fixes, preset=preset, base_url=base_url, label=args.label,
                                       progress=sys.stderr.isatty(), fresh=args.fresh, trace=args.trace)
    print(result.breakdown().to_string(float_format=lambda x: f"{x:.3f}"))
    print(json.dumps({k: result.metrics()[k] for k in ("wall_seconds", "rows_written", "requests", "failures")}))
    if args.out:
        print(f"saved {result.save(args.out)}")
    for line in result.warnings():
        print(f"perflab: warning: {redact(line)}", file=sys.stderr)
    for line in result.failure_summary():
        print(f"perflab: {redact(line)}", file=sys.stderr)
    return 0 if result.failures == 0 else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from perflab.errors import InputError
    from perflab.measure.compare import compare
    from perflab.measure.results import RunSet

    if args.repeats_needed is not None:
        return cmd_repeats_needed(args)
    if args.before is None or args.after is None:
        raise InputError("compare needs two run files, BEFORE and AFTER (or --repeats-needed CHANGE, e.g. 0.05)")
    result = compare(RunSet.load(args.before), RunSet.load(args.after), force=args.force, min_effect=args.min_effect)
    print(f"before: {result.before} ({result.n_before} runs)   after: {result.after} ({result.n_after} runs)")
    print_comparison(result)
    return 0


# --- Significance on this machine: the comparison's footer, --repeats-needed, and the regression gate (check) ---

def print_comparison(result) -> None:
    """The comparison table, why it could not decide (too few runs), and this machine's calibration."""
    from perflab.measure.calibration import footer

    print(result.table().to_string(formatters={
        "before": "{:.3f}".format, "after": "{:.3f}".format, "delta": "{:+.3f}".format,
        "improvement": "{:+.1%}".format, "speedup": "{:.2f}x".format, "noise": "{:.3f}".format,
        "p": lambda p: "-" if p != p else f"{p:.3f}"}))
    if result.repeats_note():
        print(result.repeats_note())
    print(footer(repeats=min(result.n_before, result.n_after)))


def cmd_repeats_needed(args: argparse.Namespace) -> int:
    from perflab.errors import InputError
    from perflab.measure.calibration import repeats_needed_here

    if not 0 < args.repeats_needed < 1:
        raise InputError(f"--repeats-needed takes the change as a fraction, e.g. 0.05 for 5% "
                         f"(got {args.repeats_needed:g})")
    print(repeats_needed_here(args.repeats_needed))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from perflab.db.engine import get_engine
    from perflab.db.migrate import apply_schema
    from perflab.measure.compare import compare
    from perflab.measure.history import stored_runs
    from perflab.measure.results import RunSet

    runs = RunSet.load(args.run)
    engine = get_engine()
    apply_schema(engine)
    past = stored_runs(engine, runs.params, runs.environment, limit=args.history,
                       exclude=[r.run_id for r in runs.runs])
    if not past:
        print("no stored runs of this workload, fixes and preset on this machine to check against: nothing to "
              "compare (perflab backfill stores every run; check again once there are some)")
        return 0
    result = compare(RunSet("history", past), runs, min_effect=args.min_effect, alternative="slower")
    print(f"history: {len(past)} stored runs from {past[0].started_at[:19]} to {past[-1].started_at[:19]}   "
          f"checked: {runs.label} ({len(runs.runs)} run{'s' if len(runs.runs) > 1 else ''})")
    print_comparison(result)
    total = result.total
    if total.significant:
        print(f"REGRESSION: wall time {total.after:.3f}s against a median of {total.before:.3f}s "
              f"({-total.improvement:+.1%}, p = {total.p_value:.3f}): slower beyond the noise of the stored runs")
        return 1
    print("OK: not slower beyond the noise of the stored runs" if total.enough_repeats
          else "OK by default: too few runs to judge (see above)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    from perflab.db.engine import PROJECT_ROOT

    scripts = {p.stem.removeprefix("bench_"): p for p in sorted((PROJECT_ROOT / "benchmarks").glob("bench_*.py"))}
    if args.name not in scripts:
        raise PerflabError(f"unknown benchmark {args.name!r}: use one of {', '.join(scripts) or '(none found)'}")
    return subprocess.call([sys.executable, str(scripts[args.name]), *args.rest])


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "serve": cmd_serve, "backfill": cmd_backfill, "compare": cmd_compare, "bench": cmd_bench,
    "check": cmd_check,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perflab", description="A performance lab for market-data backfill pipelines: measure where the time "
        "goes (api, db, compute), fix it behind flags, prove the gain.")
    sub = parser.add_subparsers(dest="command", required=True)
    presets = list(PRESETS)

    run = sub.add_parser("run", help="execute the notebook suite into reports/<run-id>/")
    run.add_argument("--preset", default="standard", choices=presets)
    run.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 01,03, or all (default: the "
                                    "preset's: all, or 01,06 for plan)")
    run.add_argument("--reports", help="reports folder (default: ./reports)")
    run.add_argument("--timeout", type=int, help="seconds per notebook cell (default: the preset's, 900 for smoke "
                                                 "and standard, 4 hours for plan)")

    serve = sub.add_parser("serve", help="run the Polygon simulator in the foreground")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--preset", default="standard", choices=presets)
    serve.add_argument("--seed", type=int, default=42)

    bf = sub.add_parser("backfill", help="backfill once and print the stage breakdown")
    bf.add_argument("--preset", default="smoke", choices=presets, help="workload defaults")
    bf.add_argument("--symbols", help="comma-separated, e.g. AAPL,MSFT")
    bf.add_argument("--timeframes", help="comma-separated, e.g. 1m,1h,1d")
    bf.add_argument("--from", dest="start", help="YYYY-MM-DD")
    bf.add_argument("--to", dest="end", help="YYYY-MM-DD")
    bf.add_argument("--fixes", help="none, all, a,b or all,-a (default: $PERFLAB_FIXES or none)")
    api = bf.add_mutually_exclusive_group()
    api.add_argument("--base-url", help="API base URL, http(s)://host[:port] (default: $POLYGON_BASE_URL)")
    api.add_argument("--simulator", action="store_true", help="start a local simulator for this run")
    bf.add_argument("--fresh", action="store_true", help="empty market_data and quant_features first")
    bf.add_argument("--label")
    bf.add_argument("--out", help="save the run result JSON here")
    bf.add_argument("--rollout", type=float, default=None,
                    help="fraction of symbols (stable hash) that get the per-symbol fixes")
    bf.add_argument("--trace", metavar="FILE", help="write the run's timeline as Chrome trace-event JSON here "
                    "(open it in ui.perfetto.dev or chrome://tracing)")
    bf.add_argument("--cluster", metavar="local|tcp://HOST:PORT",
                    help="run the jobs as tasks on a dask cluster: 'local' starts worker processes for the run, an "
                    "address joins a running scheduler (needs the cluster extra: pip install 'perflab[cluster]')")
    bf.add_argument("--cluster-workers", type=int, default=2, metavar="N",
                    help="worker processes of --cluster local (default 2)")

    cmp = sub.add_parser("compare", help="before/after deltas with medians, spread and significance")
    cmp.add_argument("before", nargs="?", help="run result or run set JSON")
    cmp.add_argument("after", nargs="?", help="run result or run set JSON")
    cmp.add_argument("--force", action="store_true", help="compare even if workload or environment differ")
    cmp.add_argument("--min-effect", type=float, default=0.05, help="smallest relative change that counts")
    cmp.add_argument("--repeats-needed", type=float, metavar="CHANGE",
                     help="print how many repeats a change of CHANGE (e.g. 0.05) needs on this machine, from its "
                          "calibration (perflab bench calibration)")

    chk = sub.add_parser("check", help="regression gate: exit 1 when a run is slower than the stored runs of its "
                         "workload on this machine, beyond the noise")
    chk.add_argument("run", help="run result or run set JSON (e.g. from perflab backfill --out)")
    chk.add_argument("--history", type=int, default=50, help="how many of the newest stored runs to compare with")
    chk.add_argument("--min-effect", type=float, default=0.05, help="smallest relative slowdown that counts")

    bench = sub.add_parser("bench", help="run benchmarks/bench_NAME.py (speed targets live there)")
    bench.add_argument("name")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PerflabError as exc:
        print(f"perflab: error: {redact(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("perflab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
