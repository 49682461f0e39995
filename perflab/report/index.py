"""The index page of a report: the verdict first, then each notebook with its headline numbers, then the history."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from perflab.measure.compare import compare
from perflab.measure.criteria import evaluate
from perflab.measure.critical_path import FREE, compare_views, views_sentence, what_if
from perflab.measure.history import history
from perflab.measure.results import RunResult, RunSet
from perflab.measure.verdict import PLAN_RULES, classify
from perflab.pipeline.presets import PRESETS
from perflab.redact import redact
from perflab.report.plots import history_chart, stacked_breakdown, timeline, to_png_base64

if TYPE_CHECKING:
    from perflab.report.suite import SuiteRun


def _headlines(out_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out_dir / "headlines").glob("*.json"))}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def _load_set(out_dir: Path, *names: str) -> RunSet | None:
    for name in names:
        if (out_dir / name).exists():
            return RunSet.load(out_dir / name)
    return None


def verdict_section(out_dir: Path) -> str:
    """The answer first: bottleneck path, baseline -> after seconds, improvement, criteria passed."""
    baseline = _load_set(out_dir, "baseline_runs.json", "baseline.json")
    if baseline is None:
        return "<p class='fail'>No baseline was measured in this run.</p>"
    verdict = classify(baseline)
    env = baseline.environment
    db = env.get("db", {})
    machine = (f"{env.get('cpu_model')} x{env.get('cpu_count')} · Python {env.get('python')} · "
               f"PostgreSQL {db.get('server_version')} · TimescaleDB "
               + (db["timescaledb"] if db.get("timescaledb") else "not available (plain tables, no hypertable)")
               + f" · perflab {env.get('perflab_version')} ({env.get('git_commit')})")
    shares = " · ".join(f"{s} {v:.0%}" for s, v in verdict.shares.items())
    out = [f"<div class='verdict'><h2>Bottleneck: Path {verdict.path} — {html.escape(verdict.name)}</h2>"
           f"<p>{html.escape(verdict.rule)} · busy-time shares: {shares} "
           f"(median of {len(baseline.runs)} baseline run{'s' if len(baseline.runs) > 1 else ''})</p>"]
    preset = PRESETS.get(baseline.params.get("preset"))
    if preset is not None:
        out.append(f"<p class='note'>Preset {html.escape(preset.name)}: {html.escape(preset.compression_note)}</p>")
        if preset.compresses_latency and verdict.path != "A":
            run = baseline.runs[0]
            wire = run.server_stats.get("bytes_sent") or sum(j.bytes_received for j in run.jobs)
            est = preset.full_scale_api(verdict.seconds, run.requests, run.rows_written, wire)
            path = next(rule.path for rule in PLAN_RULES if rule.matches(est.shares))
            lead = ("<b>This answer depends on the compression.</b> With" if path != verdict.path
                    else "The answer holds without the compression: with")
            out.append(f"<p class='note'>{lead} latency at full scale the API share would be ~{est.share:.0%} "
                       f"(an estimate: {run.requests:,} requests x {est.mean_latency_s:.2f} s at full scale, "
                       f"database and compute as measured), which the plan's rules would call Path {path}.</p>")
    after = _load_set(out_dir, "after_all.json")
    if after is not None:
        total = compare(baseline, after, force=True).total
        crit = evaluate(baseline, after)["passed"].dropna()
        sig = "" if total.significant else f" <b>({total.verdict})</b>"
        out.append(f"<p class='big'>{total.before:.2f}s → {total.after:.2f}s: <b>{total.improvement:.0%} less time"
                   f" ({total.speedup:.1f}x)</b>{sig} with all fixes · criteria passed: "
                   f"<b>{int(crit.sum())}/{len(crit)}</b></p>")
        img = to_png_base64(stacked_breakdown([baseline, after], title="Baseline vs all fixes: the wall time"))
        out.append(f"<img alt='baseline vs all fixes' src='data:image/png;base64,{img}'>")
    out.append(f"</div><p><small>{html.escape(machine)}</small></p>")
    table = baseline.runs[0].breakdown()
    rows = "".join(f"<tr><td>{st}</td><td>{baseline.median(st):.2f}s</td><td>{verdict.shares[st]:.0%}</td></tr>"
                   for st in table.index)
    out.append(f"<h3>Baseline breakdown: {baseline.median('wall_seconds'):.1f}s wall, "
               f"{len(baseline.runs[0].jobs)} jobs, "
               f"{baseline.runs[0].rows_written:,} rows</h3>"
               f"<table><tr><th>stage</th><th>busy (median)</th><th>share</th></tr>{rows}</table>")
    return "".join(out)


def _typical(runs: RunSet) -> RunResult | None:
    """The run with the median wall time among those that recorded spans (None: no run did)."""
    timed = sorted((r for r in runs.runs if r.spans), key=lambda r: r.wall_seconds)
    return timed[(len(timed) - 1) // 2] if timed else None


def timeline_section(out_dir: Path) -> str:
    """After the verdict: the busy-share rule beside the critical path, and the timelines of a baseline run and an
    all-fixes run (who ran what, when; the critical path outlined)."""
    sets = {"Baseline": _load_set(out_dir, "baseline_runs.json", "baseline.json"),
            "All fixes": _load_set(out_dir, "after_all.json")}
    shown = [(name, run) for name, runs in sets.items() if runs is not None and (run := _typical(runs)) is not None]
    if not shown:
        return ""
    base = shown[0][1]
    table = compare_views(base)
    rows = "".join(f"<tr><td>{st}</td><td>{_pct(row['busy share'])}</td><td>{row['critical-path s']:.2f}s</td>"
                   f"<td>{_pct(row['critical-path share'])}</td></tr>" for st, row in table.iterrows())
    out = [f"<h2>Timeline and critical path</h2><p>{html.escape(views_sentence(base))}</p>"
           f"<table><tr><th>stage</th><th>busy share</th><th>critical path</th><th>its share</th></tr>{rows}</table>"]
    out += [what_if_table(name, run) for name, run in shown]
    for name, run in shown:
        img = to_png_base64(timeline(run, title=f"{name}: {run.wall_seconds:.2f}s wall, who ran what, when"))
        out.append(f"<img alt='{name.lower()} timeline' src='data:image/png;base64,{img}'>")
    return "".join(out)


def what_if_table(name: str, run: RunResult) -> str:
    """``run``'s schedule replayed with each stage 2x faster and free, through its preset's rate limit: what a fix
    of that stage could buy (notebook 01 has every speed-up, and the check against real runs)."""
    preset = PRESETS.get(run.params.get("preset", ""))
    config = preset.simulator_config() if preset else None
    predictions = what_if(run, config.rate_limit_per_s if config else None, config.burst if config else None,
                          speedups=(2.0, FREE))
    cells = {(p.stage, p.k): f"{p.wall_seconds:.2f}s ({p.change:+.0%})" for p in predictions}
    rows = "".join(f"<tr><td>{stage}</td><td>{cells[stage, 2.0]}</td><td>{cells[stage, FREE]}</td></tr>"
                   for stage in dict.fromkeys(p.stage for p in predictions))
    return (f"<p>What if, {html.escape(name.lower())} ({run.wall_seconds:.2f}s): the run replayed with one stage "
            f"faster (same requests, same workers, the rate limit kept)</p><table><tr><th>stage</th><th>2x faster</th>"
            f"<th>free</th></tr>{rows}</table>")


def _pct(value: float) -> str:
    return "" if value != value else f"{value:.0%}"  # NaN: not a share (the critical path's wait)


def history_section(engine, preset: str) -> str:
    runs = history(engine, preset=preset)
    if runs.empty:
        return ""
    img = to_png_base64(history_chart(runs, title=f"Every {preset} run stored on this machine ({len(runs)})"))
    return f"<h2>History</h2><img alt='run history' src='data:image/png;base64,{img}'>"


def write_index(suite: SuiteRun, engine=None) -> Path:
    """The index page: the verdict first, then each notebook with its headline numbers, then the history."""
    out = suite.out_dir
    parts = [f"<h1>perflab report <small>{html.escape(suite.run_id)}</small></h1>",
             f"<p>Preset <b>{html.escape(suite.preset)}</b>. Every number below was measured in this run.</p>",
             verdict_section(out), timeline_section(out)]
    heads = _headlines(out)
    items = []
    for nb in suite.notebooks:
        status = "" if nb.error is None else f' <span class="fail">failed: {html.escape(nb.error)}</span>'
        nums = heads.get(nb.name, {})
        detail = ", ".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in nums.items())
        items.append(f'<li><a href="{nb.html.name}">{html.escape(nb.name)}</a> ({nb.seconds:.0f}s){status}'
                     + (f"<br><small>{detail}</small>" if detail else "") + "</li>")
    parts.append(f"<h2>Notebooks</h2><ul>{''.join(items)}</ul>")
    if (out / "PERFORMANCE_RESULTS.md").exists():
        parts.append("<p><a href='PERFORMANCE_RESULTS.md'>PERFORMANCE_RESULTS.md</a> (written from this run)</p>")
    if engine is not None:
        parts.append(history_section(engine, suite.preset))
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .8em;text-align:right}"
             "td:first-child{text-align:left}.fail{color:#b00}small{color:#666}li{margin:.5em 0}"
             ".verdict{background:#f4f7fb;border-left:5px solid #4C72B0;padding:.5em 1em}.big{font-size:1.25em}"
             "img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>perflab {html.escape(suite.run_id)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    suite.index.write_text(redact(page))
    return suite.index
