"""Workload presets: which symbols, timeframes and dates a run backfills, and how the simulator behaves.

``smoke`` is tiny (CI, first open of a notebook); ``standard`` is the plan's 25 symbols x 5 timeframes
scaled so the whole notebook suite runs in minutes; ``plan`` replays the plan's scale in real time;
``large`` is the plan's jobs over a whole year (~7.2 million bars, the volume benchmark) and ``large_month``
the same shape over one month (tests, and the benchmark's month-vs-year memory comparison).
A preset that scales latency says so: :attr:`Preset.compression_note` names what was compressed and what was not,
and :meth:`Preset.full_scale_api` estimates the API's share had nothing been compressed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date

from perflab.errors import InputError
from perflab.simulator.config import SYMBOLS_25, SimulatorConfig
from perflab.timeframes import parse_timeframe

TIMEFRAMES_5 = ("1m", "5m", "15m", "1h", "1d")


def _seconds(lo: float, hi: float | None = None) -> str:
    """A duration (or a range) in the unit that reads best: ``0.5-0.8 s``, ``1.25-2 ms``, ``30 µs``."""
    top = lo if hi is None else hi
    factor, unit = next(((f, u) for f, u in ((1.0, "s"), (1e-3, "ms")) if top >= f / 10), (1e-6, "µs"))
    value = f"{lo / factor:.3g}" + ("" if hi is None or hi == lo else f"-{hi / factor:.3g}")
    return f"{value} {unit}"


@dataclass(frozen=True)
class FullScaleApi:
    """Estimated busy seconds and shares per stage had the API's latency run at full scale (the rest as measured)."""

    api_s: float
    shares: dict[str, float]
    requests: int
    mean_latency_s: float
    """Full-scale seconds per request (base mean plus this run's bars and wire bytes per request)."""

    @property
    def share(self) -> float:
        return self.shares["api"]


@dataclass(frozen=True)
class Preset:
    """A named workload. Latency is the simulator's base per-request range in seconds before ``time_scale``."""

    name: str
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    start: date
    end: date
    latency_s: tuple[float, float] = SimulatorConfig.latency_s
    time_scale: float = 1.0
    rate_limit_per_s: float | None = None
    repeats: int = 3
    description: str = ""
    suite: tuple[str, ...] = ()
    """The notebooks ``perflab run`` executes by default (empty: all of them). The plan preset runs its scenario
    (01 baseline, 06 before/after: verdict, progression, criteria), 55 minutes here; the path studies 02-05 and 07
    repeat whole backfills whose fetches go one after another at 0.5-0.8 s a request, about two hours more
    (``perflab run --preset plan --only all``)."""
    cell_timeout_s: int = 900
    """How long ``perflab run`` lets one notebook cell take: at the plan's scale one cell runs several backfills of
    ten minutes each (notebook 06's repeated baseline), which the 15 minutes of the small presets would cut."""

    @property
    def jobs(self) -> int:
        return len(self.symbols) * len(self.timeframes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d

    def with_overrides(self, **changes) -> Preset:
        """Copy with some fields changed (e.g. fewer symbols for a quick look)."""
        return replace(self, **changes)

    def simulator_config(self, **overrides) -> SimulatorConfig:
        """The simulator this preset runs against: its latency, time scale and rate limit (plus ``overrides``)."""
        return replace(SimulatorConfig(latency_s=self.latency_s, time_scale=self.time_scale,
                                       rate_limit_per_s=self.rate_limit_per_s), **overrides)

    @property
    def compresses_latency(self) -> bool:
        """True when the simulator's latency runs faster than the plan's (``time_scale`` < 1)."""
        return self.time_scale < 1

    @property
    def compression_note(self) -> str:
        """Which costs this preset compresses and which run at full cost, so no share is read as the plan's."""
        config = self.simulator_config()
        lo, hi = config.latency_s
        rate = (f" + wire bytes at {config.transfer_bytes_per_s / 1e6:.3g} MB/s"
                if config.transfer_bytes_per_s else "")
        costs = f"{_seconds(lo, hi)} per request + {_seconds(config.per_bar_s)} per bar{rate}"
        scale = self.time_scale
        if scale == 1:
            note = f"Nothing compressed: API latency at full scale ({costs}); database and compute at full cost"
        else:
            how = ("removed" if scale == 0 else f"compressed {1 / scale:.4g}x" if scale < 1
                   else f"stretched {scale:.4g}x")
            note = (f"API latency {how} ({_seconds(lo, hi)} -> {_seconds(lo * scale, hi * scale)} per request; "
                    f"the per-bar and transfer costs alike); database and compute run at full cost: "
                    f"the verdict's shares are not the plan's")
        if self.rate_limit_per_s:
            note += f"; the rate limit ({self.rate_limit_per_s:g} requests/s) is in wall seconds, not compressed"
        return note + "."

    def full_scale_api(self, seconds: dict[str, float], requests: int, bars: int, wire_bytes: int) -> FullScaleApi:
        """Estimate the stage seconds and shares of a run of this preset had its API latency run at full scale.

        The API's measured busy seconds plus the modelled cost that ``time_scale`` took away from ``requests``
        requests carrying ``bars`` bars in ``wire_bytes`` body bytes; database and compute as measured. Busy
        seconds add up across workers, so nothing is divided by the worker count. A rough estimate: the
        server's real work and any retries are taken as measured.
        """
        config = self.simulator_config()
        full = config.full_scale_s(requests, bars, wire_bytes)
        measured = {stage: float(v) for stage, v in seconds.items()}
        measured["api"] = measured.get("api", 0.0) + full * (1 - config.time_scale)
        total = sum(measured.values()) or 1.0
        return FullScaleApi(measured["api"], {stage: v / total for stage, v in measured.items()}, requests,
                            full / requests if requests else 0.0)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "smoke", SYMBOLS_25[:3], ("5m", "1h", "1d"), date(2024, 3, 4), date(2024, 3, 5),
            time_scale=0.005, repeats=2, description="CI size: 3 symbols x 3 timeframes x 2 days",
        ),
        Preset(
            "standard", SYMBOLS_25, ("5m", "15m", "30m", "1h", "1d"), date(2024, 3, 4), date(2024, 3, 4),
            time_scale=0.0025, rate_limit_per_s=100.0, repeats=2,
            description="the plan's 25 x 5 jobs (5m to 1d bars) over a trading day, API latency compressed 400x, "
                        "100 requests/s limit (a paid plan)",
        ),
        Preset(
            "plan", SYMBOLS_25, TIMEFRAMES_5, date(2024, 3, 4), date(2024, 3, 29),
            time_scale=1.0, repeats=1, cell_timeout_s=4 * 3600, suite=("01", "06"),
            description="the plan's own scale: 25 x 5 jobs, about a month, 2-4 s per symbol/timeframe",
        ),
        Preset(
            "large", SYMBOLS_25, TIMEFRAMES_5, date(2023, 1, 1), date(2023, 12, 31),
            time_scale=0.0025, repeats=1, cell_timeout_s=3600,
            description="volume: the plan's 25 x 5 jobs (1m to 1d bars) over all of 2023, ~7.2 million bars, "
                        "API latency compressed 400x",
        ),
        Preset(
            "large_month", SYMBOLS_25, TIMEFRAMES_5, date(2023, 1, 1), date(2023, 1, 31),
            time_scale=0.0025, repeats=1, cell_timeout_s=3600,
            description="the large preset's shape over January 2023 (~600,000 bars), API latency compressed 400x",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Look up a preset; an unknown name raises :class:`InputError` listing the known ones."""
    try:
        preset = PRESETS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
    for tf in preset.timeframes:
        parse_timeframe(tf)
    return preset


def parse_date(value: str | date, what: str = "date") -> date:
    """Parse ``YYYY-MM-DD``; a malformed value raises :class:`InputError` naming the parameter."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{what} {value!r} is not a date: use YYYY-MM-DD") from None


def check_range(start: date, end: date, today: date | None = None) -> None:
    """Reject ``from`` after ``to`` and ranges entirely in the future, naming the fix."""
    if start > end:
        raise InputError(f"from {start} is after to {end}: swap them or fix the range")
    today = today or date.today()
    if start > today:
        raise InputError(f"from {start} is in the future (today is {today}): no bars exist yet")
