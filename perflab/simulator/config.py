"""How a simulator behaves: seed, cost model (latency per request), accepted key, ticker universe, rate limit, faults.

The cost model (``docs/simulator.md`` states it and its calibration): one request costs a seeded base drawn
uniformly from ``latency_s`` (round trip and server queueing), plus ``per_bar_s`` for each bar in the page
(server time: query and serialisation), plus the body's bytes on the wire (gzip when the client asks)
over ``transfer_bytes_per_s``; all of it times ``time_scale``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from perflab.errors import InputError

LOCAL_API_KEY = "perflab-local-key"  # accepted when POLYGON_API_KEY is unset (the client sends the same to 127.0.0.1)
SYMBOLS_25 = (
    "AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "JNJ",
    "WMT", "PG", "XOM", "UNH", "HD", "BAC", "MA", "DIS", "KO", "PEP",
    "CSCO", "INTC", "NFLX", "ADBE", "CRM",
)
ETFS = ("SPY", "QQQ", "IWM", "DIA")


@lru_cache(maxsize=8)
def generated_tickers(count: int, exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """``count`` distinct made-up ticker names (2-5 capital letters, none in ``exclude``), the same on every call."""
    rng = np.random.default_rng(20_240_304)
    letters = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", np.uint8)
    names: dict[str, None] = {}
    while len(names) < count:
        lengths = rng.choice([2, 3, 4, 5], size=count, p=[0.02, 0.28, 0.5, 0.2])
        codes = letters[rng.integers(0, 26, (count, 5))]
        for row, n in zip(codes, lengths):
            name = row[:n].tobytes().decode()
            if name not in exclude:
                names.setdefault(name)
    return tuple(names)[:count]


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes the simulator's answers; the same config gives the same bars and delays.

    ``latency_s``, ``per_bar_s`` and ``transfer_bytes_per_s`` are at full scale; ``time_scale`` multiplies the
    whole delay (``transfer_bytes_per_s=None``: transfer is free). ``rate_limit_per_s`` is per API key in wall
    seconds (not scaled by ``time_scale``); the bucket holds ``rate_limit_burst`` tokens (default a tenth of a
    second's worth, at least 1). ``faults``: see :mod:`perflab.simulator.faults`.

    The ticker universe is ``tickers`` followed by generated names up to ``universe_size`` tickers in all (a
    10,000-ticker market for the grouped daily endpoint); per-ticker requests know every ticker of the universe
    and of ``otc_tickers`` (``tickers=None``: any ticker), the grouped endpoint serves the universe, and the OTC
    ones only with ``include_otc=true``. Any other ticker gets an empty 200, as Polygon answers.
    """

    seed: int = 42
    latency_s: tuple[float, float] = (0.5, 0.8)
    per_bar_s: float = 30e-6
    transfer_bytes_per_s: float | None = 2e6
    time_scale: float = 1.0
    api_key: str = field(default_factory=lambda: os.environ.get("POLYGON_API_KEY") or LOCAL_API_KEY)
    tickers: tuple[str, ...] | None = SYMBOLS_25 + ETFS
    universe_size: int | None = None
    otc_tickers: tuple[str, ...] = ()
    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None
    retry_after: bool = True
    faults: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        lo, hi = self.latency_s
        if not 0 <= lo <= hi:
            raise InputError(f"simulator latency_s must be (low, high) seconds, 0 <= low <= high: got {self.latency_s}")
        if self.per_bar_s < 0 or self.time_scale < 0:
            raise InputError("simulator per_bar_s and time_scale must be >= 0: "
                             f"got {self.per_bar_s} and {self.time_scale}")
        if self.transfer_bytes_per_s is not None and self.transfer_bytes_per_s <= 0:
            raise InputError("simulator transfer_bytes_per_s must be > 0 (or None: free transfer): "
                             f"got {self.transfer_bytes_per_s}")
        if self.universe_size is not None and not 0 <= self.universe_size <= 100_000:
            raise InputError(f"simulator universe_size must be 0 to 100,000 (or None): got {self.universe_size}")

    @cached_property
    def universe(self) -> tuple[str, ...]:
        """The listed (non-OTC) tickers, sorted: ``tickers`` plus generated names up to ``universe_size``."""
        named = tuple(dict.fromkeys(self.tickers or ()))
        extra = max(0, (self.universe_size or 0) - len(named))
        taken = frozenset(named) | frozenset(self.otc_tickers)
        return tuple(sorted(named + (generated_tickers(extra, taken) if extra else ())))

    def knows(self, ticker: str) -> bool:
        """Whether a per-ticker request for ``ticker`` gets bars (any ticker when ``tickers`` is None)."""
        if self.tickers is None or ticker in self.otc_tickers:
            return True
        return ticker in self._known

    @cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.universe)

    def request_cost_s(self, u: float, bars: int = 0, wire_bytes: int = 0) -> float:
        """Full-scale seconds one request costs: base at uniform draw ``u`` in [0, 1), plus its bars and bytes."""
        lo, hi = self.latency_s
        return lo + (hi - lo) * u + self.page_cost_s(bars, wire_bytes)

    def page_cost_s(self, bars: int, wire_bytes: int) -> float:
        """Full-scale seconds that grow with the page: server time per bar plus transfer of the wire bytes."""
        transfer = wire_bytes / self.transfer_bytes_per_s if self.transfer_bytes_per_s else 0.0
        return bars * self.per_bar_s + transfer

    def full_scale_s(self, requests: int, bars: int, wire_bytes: int) -> float:
        """Expected full-scale seconds of ``requests`` requests that carried ``bars`` bars in ``wire_bytes`` bytes."""
        return requests * sum(self.latency_s) / 2 + self.page_cost_s(bars, wire_bytes)

    @property
    def burst(self) -> float:
        """Tokens the rate-limit bucket holds (meaningful only with a rate limit)."""
        return self.rate_limit_burst or max(1.0, (self.rate_limit_per_s or 0.0) / 10)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SimulatorConfig:
        d = json.loads(text)
        d["latency_s"] = tuple(d["latency_s"])
        if d.get("tickers") is not None:
            d["tickers"] = tuple(d["tickers"])
        d["otc_tickers"] = tuple(d.get("otc_tickers", ()))
        return cls(**d)
