"""Calibration: how often ``perflab compare`` calls a change where there is none, and how often it sees a real one,
measured on this machine (``perflab bench calibration`` runs the study; this module judges and keeps its figures).

The study runs one configuration in two orders, ``repeats`` runs a side, part of them with a planted slowdown of
``effect`` (10%):

- **in sequence**, as a user does it (all "before" runs, then all "after" runs): blocks B1 S1 B2 S2 ... Two plain
  blocks in a row (B_i, B_i+1) are an A/A comparison, a change that changes nothing; a plain block and the slowed
  block after it (B_i, S_i) are a real 10% slowdown. Drift of the machine between blocks counts against the test.
- **interleaved** (plain, plain, slowed, plain, plain, slowed... in rotating order): each round's two plain sides
  are an A/A comparison, a plain side and the slowed one a real slowdown. Drift falls on every side alike.

The **false-positive rate** is the share of A/A comparisons called significant; the **power** the share of planted
slowdowns called slower. The same figures from random draws out of the pooled runs (order shuffled away: what the
test promises for exchangeable runs) are kept beside them.

Every calibration is saved as its own JSON (raw samples, environment, commit) in ``.perflab/bench/``; the newest one
made on this machine is the footer of every comparison, and the source of ``perflab compare --repeats-needed``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from perflab.errors import ConfigError, InputError
from perflab.measure.benchrecord import bench_dir, save_bench
from perflab.measure.compare import ALPHA, enough_repeats, judge
from perflab.measure.environment import cpu_model

NAME = "calibration"
EFFECT = 0.10
"""The planted slowdown whose detection rate is the power."""
REPEATS = 30
"""Runs per side in each calibrated comparison, the default of ``perflab bench calibration``: about what a 10%
change needs on a 2-core machine whose runs spread by ~12% (``perflab compare --repeats-needed 0.1`` says what this
machine needs). The footer also gives the rates at a comparison's own number of runs."""
TARGET_FALSE_POSITIVE_RATE = 0.05
TARGET_POWER = 0.80
NOT_CALIBRATED = "not calibrated yet: run perflab bench calibration"


@dataclass(frozen=True)
class Round:
    """One interleaved round: two plain sides and a slowed one, their runs taken in turn."""

    a: list[float]
    b: list[float]
    slowed: list[float]


@dataclass(frozen=True)
class Calibration:
    """The measured error rates of the significance test at ``repeats`` runs per side."""

    repeats: int
    effect: float
    false_positive_rate: float
    """A/A comparisons called significant, runs in sequence (before, then after)."""
    power: float
    """Planted slowdowns called slower, runs in sequence."""
    sequential_comparisons: int
    false_positive_rate_interleaved: float
    power_interleaved: float
    interleaved_comparisons: int
    false_positive_rate_resampled: float
    power_resampled: float
    resamples: int
    realized_effect: float
    """The slowdown the planted sleep caused (median over comparisons of slowed / plain medians - 1)."""
    run_cv: float
    """Spread of the plain runs (standard deviation / mean), drift included."""

    @property
    def passed(self) -> bool:
        """With before and after runs interleaved (the order the rank test's promise assumes: runs exchangeable), at
        most 5% false positives and at least 80% of 10% slowdowns seen. Runs taken in sequence are reported, not
        judged: drift between the blocks makes changes of its own, which no test of the runs alone can tell apart."""
        return (self.false_positive_rate_interleaved <= TARGET_FALSE_POSITIVE_RATE
                and self.power_interleaved >= TARGET_POWER)

    def footer(self) -> str:
        return (f"calibrated on this machine at {self.repeats} repeats a side, before and after runs interleaved: "
                f"false-positive rate {self.false_positive_rate_interleaved:.0%}, power "
                f"{self.power_interleaved:.0%} for a {self.effect:.0%} change; taken in sequence instead "
                f"{self.false_positive_rate:.0%} and {self.power:.0%} (drift between the blocks)")


_FIELDS = tuple(f.name for f in fields(Calibration))


def analyze(base: list[list[float]], slowed: list[list[float]], rounds: list[Round], *, effect: float = EFFECT,
            min_effect: float = 0.05, alpha: float = ALPHA, resamples: int = 2000, seed: int = 0) -> Calibration:
    """The error rates from the sequential blocks (``base``, ``slowed``: B1 S1 B2 S2 ...) and interleaved ``rounds``."""
    repeats = len(base[0]) if base else len(rounds[0].a)

    def called(pairs) -> list[bool]:
        return [judge(list(x), list(y), min_effect=min_effect, alpha=alpha)[0] for x, y in pairs]

    def detected(pairs) -> list[bool]:
        return [_detects(x, y, min_effect, alpha) for x, y in pairs]

    seq_aa, seq_power = list(zip(base, base[1:], strict=False)), list(zip(base, slowed, strict=False))
    int_aa, int_power = [(r.a, r.b) for r in rounds], [(r.a, r.slowed) for r in rounds]
    pool_b = np.concatenate([*base, *(r.a for r in rounds), *(r.b for r in rounds)])
    pool_s = np.concatenate([*slowed, *(r.slowed for r in rounds)])
    rng = np.random.default_rng(seed)
    fp_draws = power_draws = 0
    for _ in range(resamples):
        both = rng.choice(pool_b, 2 * repeats, replace=False)
        fp_draws += judge(list(both[:repeats]), list(both[repeats:]), min_effect=min_effect, alpha=alpha)[0]
        power_draws += _detects(rng.choice(pool_b, repeats, replace=False), rng.choice(pool_s, repeats, replace=False),
                                min_effect, alpha)
    effects = [np.median(s) / np.median(b) - 1 for b, s in seq_power + [(r.a + r.b, r.slowed) for r in rounds]]
    return Calibration(
        repeats=repeats, effect=effect,
        false_positive_rate=_share(called(seq_aa)), power=_share(detected(seq_power)),
        sequential_comparisons=len(seq_power),
        false_positive_rate_interleaved=_share(called(int_aa)), power_interleaved=_share(detected(int_power)),
        interleaved_comparisons=len(rounds),
        false_positive_rate_resampled=fp_draws / resamples, power_resampled=power_draws / resamples,
        resamples=resamples, realized_effect=float(np.median(effects)), run_cv=float(pool_b.std() / pool_b.mean()))


def _share(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def _detects(before, after, min_effect: float, alpha: float) -> bool:
    """Whether the two-sided test calls ``after`` significantly slower than ``before``."""
    significant, _, _ = judge(list(before), list(after), min_effect=min_effect, alpha=alpha)
    return significant and float(np.median(after)) > float(np.median(before))


def save_calibration(calibration: Calibration, base: list[list[float]], slowed: list[list[float]],
                     rounds: list[Round], *, runs: list[dict] | None = None, params: dict | None = None, engine=None,
                     directory: Path | None = None) -> Path:
    """Write a new ``calibration-<UTC time>.json`` (never over an earlier one) with the raw samples."""
    directory = directory or bench_dir()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"{NAME}-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{NAME}-{stamp}-{n}.json"
    samples = {"base_blocks": base, "slowed_blocks": slowed, "rounds": [asdict(r) for r in rounds], "runs": runs or []}
    return save_bench(NAME, asdict(calibration), samples=samples,
                      targets={"false_positive_rate": f"<= {TARGET_FALSE_POSITIVE_RATE}",
                               "power": f">= {TARGET_POWER}"},
                      params=params, engine=engine, path=path)


def latest_record(directory: Path | None = None) -> dict | None:
    """The newest calibration saved on this machine (same CPU model and count), or None."""
    directory = directory or bench_dir()
    records = []
    for path in directory.glob(f"{NAME}-*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("benchmark") != NAME:
            continue
        env = record.get("environment") or {}
        complete = isinstance(record.get("results"), dict) and set(_FIELDS) <= set(record["results"])
        if complete and env.get("cpu_model") == cpu_model() and env.get("cpu_count") == os.cpu_count():
            records.append((record.get("created_at", ""), path.name, record))
    return max(records, key=lambda r: r[:2])[2] if records else None


def latest(directory: Path | None = None) -> Calibration | None:
    record = latest_record(directory)
    if record is None:
        return None
    return Calibration(**{k: record["results"][k] for k in _FIELDS})


def footer(directory: Path | None = None, repeats: int | None = None) -> str:
    """The line every comparison ends with: this machine's measured error rates (and, for a comparison of
    ``repeats`` runs a side other than the calibrated number, the rates at that number), or how to measure them."""
    record = latest_record(directory)
    if record is None:
        return NOT_CALIBRATED
    calibration = Calibration(**{k: record["results"][k] for k in _FIELDS})
    line = calibration.footer()
    if repeats and repeats != calibration.repeats and enough_repeats(repeats, repeats):
        fp, power = rates_at(record, repeats)
        line += (f"; at this comparison's {repeats} runs a side (interleaved): {fp:.0%} and {power:.0%} for a "
                 f"{calibration.effect:.0%} change")
    return line


def _pooled(samples: dict, *, slowed: bool) -> np.ndarray:
    """Every plain (or slowed) run of a calibration record's samples, those in sequence and those interleaved."""
    blocks = samples["slowed_blocks" if slowed else "base_blocks"]
    sides = ("slowed",) if slowed else ("a", "b")
    interleaved = [x for r in samples.get("rounds", []) for k in sides for x in r[k]]
    return np.array([x for b in blocks for x in b] + interleaved)


def rates_at(record: dict, repeats: int, *, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """False-positive rate and power of the test at ``repeats`` runs a side, from random draws out of a calibration
    record's pooled plain and slowed runs (what interleaved runs promise: the order drawn away)."""
    samples, effect = record["samples"], record["results"]["effect"]
    plain, slowed = _pooled(samples, slowed=False), _pooled(samples, slowed=True)
    rng = np.random.default_rng(seed)
    fp = power = 0
    for _ in range(resamples):
        both = rng.choice(plain, 2 * repeats)
        fp += judge(list(both[:repeats]), list(both[repeats:]), min_effect=effect / 2)[0]
        power += _detects(rng.choice(plain, repeats), rng.choice(slowed, repeats), effect / 2, ALPHA)
    return fp / resamples, power / resamples


@dataclass(frozen=True)
class RepeatsNeeded:
    """How many runs per side detect a change of ``effect`` with probability ``power`` on this machine's noise."""

    effect: float
    repeats: int | None
    """None: not even ``max_repeats`` do."""
    power: float
    """The detection rate at ``repeats`` (or at ``max_repeats``)."""
    run_cv: float
    samples: int
    max_repeats: int

    def __str__(self) -> str:
        basis = (f"from {self.samples} calibration runs, run-to-run spread {self.run_cv:.1%}; compare with "
                 f"--min-effect {self.effect / 2:g} or lower, since a floor at the change itself misses half of them")
        if self.repeats is None:
            return (f"a {self.effect:.0%} change needs more than {self.max_repeats} repeats per side on this machine "
                    f"(detected {self.power:.0%} of the time at {self.max_repeats}; {basis})")
        return (f"a {self.effect:.0%} change needs {self.repeats} repeats per side on this machine to be detected "
                f"{self.power:.0%} of the time, before and after runs interleaved ({basis})")


def repeats_needed(effect: float, samples: list[float], *, power: float = TARGET_POWER, alpha: float = ALPHA,
                   trials: int = 400, seed: int = 0, max_repeats: int = 64) -> RepeatsNeeded:
    """The smallest n per side whose comparisons detect a change of ``effect`` in at least ``power`` of simulated
    trials: n runs drawn from ``samples`` (this machine's plain runs) against n drawn and scaled by 1 + effect,
    judged by the same test as ``compare`` (factor floor at half the effect). Draws ignore the order of the runs, so
    the answer holds for interleaved runs; in sequence, drift between the sides adds to it."""
    pool = np.asarray(samples, dtype=float)
    if len(pool) < 2 or effect <= 0:
        raise InputError("repeats needed: give a change above 0 (e.g. 0.05) and calibration with at least 2 runs")

    def detection(n: int) -> float:
        rng = np.random.default_rng(seed)  # the same draws for every n, so the rate grows smoothly with n
        hits = sum(_detects(rng.choice(pool, n), rng.choice(pool, n) * (1 + effect), effect / 2, alpha)
                   for _ in range(trials))
        return hits / trials

    rates: dict[int, float] = {}

    def reaches(n: int) -> bool:
        if n not in rates:
            rates[n] = detection(n)
        return rates[n] >= power

    cv = float(pool.std() / pool.mean())
    low, high = 0, next(n for n in range(1, max_repeats + 1) if enough_repeats(n, n, alpha))
    while not reaches(high):  # double until a size reaches the power, then bisect down to the smallest that does
        if high >= max_repeats:
            return RepeatsNeeded(effect, None, rates[high], cv, len(pool), max_repeats)
        low, high = high, min(2 * high, max_repeats)
    while low and high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return RepeatsNeeded(effect, high, rates[high], cv, len(pool), max_repeats)


def repeats_needed_here(effect: float, directory: Path | None = None) -> RepeatsNeeded:
    """:func:`repeats_needed` on the plain runs of this machine's latest calibration."""
    record = latest_record(directory)
    if record is None:
        raise ConfigError(f"cannot say how many repeats a change needs: {NOT_CALIBRATED}")
    return repeats_needed(effect, list(_pooled(record["samples"], slowed=False)))
