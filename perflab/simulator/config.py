"""How a simulator behaves: seed, latency model, accepted key, ticker universe, rate limit, faults."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

LOCAL_API_KEY = "perflab-local-key"  # accepted when POLYGON_API_KEY is unset (the client sends the same to 127.0.0.1)
SYMBOLS_25 = (
    "AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "JNJ",
    "WMT", "PG", "XOM", "UNH", "HD", "BAC", "MA", "DIS", "KO", "PEP",
    "CSCO", "INTC", "NFLX", "ADBE", "CRM",
)


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes the simulator's answers; the same config gives the same bars and delays.

    ``rate_limit_per_s`` is per API key in wall seconds (not scaled by ``time_scale``); the bucket holds
    ``rate_limit_burst`` tokens (default a tenth of a second's worth, at least 1). ``faults``: see
    :mod:`perflab.simulator.faults`.
    """

    seed: int = 42
    latency_s: tuple[float, float] = (2.0, 4.0)
    time_scale: float = 1.0
    api_key: str = field(default_factory=lambda: os.environ.get("POLYGON_API_KEY") or LOCAL_API_KEY)
    tickers: tuple[str, ...] | None = SYMBOLS_25 + ("SPY", "QQQ", "IWM", "DIA")
    rate_limit_per_s: float | None = None
    rate_limit_burst: int | None = None
    retry_after: bool = True
    faults: dict = field(default_factory=dict)

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
        return cls(**d)
