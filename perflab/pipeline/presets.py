"""Workload presets: which symbols, timeframes and dates a run backfills, and how the simulator behaves.

``smoke`` is tiny (CI, first open of a notebook); ``standard`` is the plan's 25 symbols x 5 timeframes
scaled so the whole notebook suite runs in minutes; ``plan`` replays the plan's scale in real time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date

from perflab.errors import InputError
from perflab.simulator.config import SYMBOLS_25, SimulatorConfig
from perflab.timeframes import parse_timeframe

TIMEFRAMES_5 = ("1m", "5m", "15m", "1h", "1d")


@dataclass(frozen=True)
class Preset:
    """A named workload. Latency is the simulator's per-request range in seconds before ``time_scale``."""

    name: str
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    start: date
    end: date
    latency_s: tuple[float, float] = (2.0, 4.0)
    time_scale: float = 1.0
    rate_limit_per_s: float | None = None
    repeats: int = 3
    description: str = ""

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
            description="the plan's 25 x 5 jobs (5m to 1d bars) over a trading day, latency scaled 1/400, "
                        "100 requests/s limit (a paid plan)",
        ),
        Preset(
            "plan", SYMBOLS_25, TIMEFRAMES_5, date(2024, 3, 4), date(2024, 3, 29),
            time_scale=1.0, repeats=1,
            description="the plan's own scale: 25 x 5 jobs, about a month, 2-4 s per request",
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
