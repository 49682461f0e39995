"""Fetches shared across a run's jobs (``api.grouped_daily``, ``api.derived_timeframes``): fewer requests, same bars.

:class:`SharedFetch` wraps the run's client (it is an :class:`~perflab.api.client.AggregatesSource`, so the job steps
stay as they are). ``api.grouped_daily``: a 1d request for the run's range is served from grouped daily bars, one
request per weekday of the range, fetched once for the run by the first 1d job (counted into its record), up to
``GROUPED_FETCHERS`` days at once: the days are independent requests, so they need not wait for each other (a
month's 20 days one after another were the longest chain of a plan-scale run).
``api.derived_timeframes``: a 5m/15m/30m/1h/4h request for the run's range is folded (:mod:`perflab.pipeline.derive`)
from the symbol's 1m bars, fetched once per symbol by its first such job (the 1m job takes the same bars); a
symbol's later jobs make no request. Only requests for the workload's whole range are served from the caches:
any other range (a resume's missing days under ``api.missing_only``, ``db.stream``'s windows) goes to the wrapped
client as before. A symbol the grouped bars never name (an OTC or non-stock ticker) fetches its own daily bars.
Each fix acts only where it saves requests: grouped daily when the range has fewer weekdays than the run has
symbols (each per-ticker 1d fetch is at least one request); derived bars when a symbol's 1m pages are fewer than
the pages of its 1m and derivable jobs fetched one by one (so always with a 1m job; a long range of 5m alone not).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pandas as pd

from perflab.api.client import BAR_COLUMNS, AggregatesSource, FetchResult
from perflab.measure.results import RequestStats
from perflab.measure.timing import in_this_stage
from perflab.pipeline.derive import derive_bars
from perflab.timeframes import TIMEFRAMES, Timeframe, ny_day_start

DERIVABLE = tuple(tf.name for tf in TIMEFRAMES.values() if tf.timespan in ("minute", "hour") and tf.name != "1m")
"""The timeframes folded from 1m bars under ``api.derived_timeframes`` (daily bars are not the fold of minutes)."""
GROUPED_FETCHERS = 16
"""Grouped daily requests in flight at once (within the transport's pool of 32; the in-flight limit and the pacer
still decide when each goes)."""


def weekdays(start: date, end: date) -> list[date]:
    """Monday to Friday dates of [start, end]: the days a grouped daily request can have bars for."""
    return [start + timedelta(days=i) for i in range((end - start).days + 1)
            if (start + timedelta(days=i)).weekday() < 5]


def pages(tf: Timeframe, days: int, page_limit: int) -> int:
    """Pages one symbol's ``tf`` bars of ``days`` days take at most (a market open all day), to weigh the fixes."""
    per_bar_min = tf.multiplier * (60 if tf.timespan == "hour" else 1)
    return -(-days * 1440 // per_bar_min // page_limit)


def _grouped_source(client: AggregatesSource) -> Callable[..., FetchResult]:
    """The first ``get_grouped_daily`` down the chain of wrapped clients (a breaker's guarded client has none)."""
    while not hasattr(client, "get_grouped_daily"):
        client = client.client  # type: ignore[attr-defined]
    return client.get_grouped_daily  # type: ignore[attr-defined]


class SharedFetch:
    """The run's client with 1d bars from grouped daily requests and intraday bars derived from 1m bars.

    Thread-safe: the grouped bars are fetched once under a run-wide lock by the first caller; a symbol's 1m bars
    once under that symbol's lock, and dropped once every job of the symbol that shares them has taken its bars.
    """

    def __init__(self, client: AggregatesSource, symbols: tuple[str, ...], timeframes: tuple[str, ...],
                 start: date, end: date, *, grouped_daily: bool, derived: bool, page_limit: int = 5000,
                 minute_windows: int = 0):
        self.client = client
        self.start, self.end = start, end
        self.grouped_daily = grouped_daily and "1d" in timeframes and len(weekdays(start, end)) < len(symbols)
        sharing = [tf for tf in timeframes if tf == "1m" or tf in DERIVABLE]
        days = (end - start).days + 1
        self.derived = derived and any(tf in DERIVABLE for tf in sharing) and (
            pages(TIMEFRAMES["1m"], days, page_limit) < sum(pages(TIMEFRAMES[tf], days, page_limit) for tf in sharing))
        self._symbols = frozenset(symbols)
        self._daily: dict[str, pd.DataFrame] | None = None
        self._daily_lock = threading.Lock()
        # A streamed 1m job asks for its range window by window: while the minutes are shared anyway, each of its
        # ``minute_windows`` windows is a slice of them (the same bars: a second fetch of them saved) and a taker.
        self._takers = {s: len(sharing) + (minute_windows if self.derived else 0) for s in symbols}
        self._minutes: dict[str, pd.DataFrame] = {}
        self._symbol_locks = {s: threading.Lock() for s in symbols}

    @property
    def base_url(self) -> str:
        return self.client.base_url

    def __repr__(self) -> str:
        return f"SharedFetch({self.client!r}, grouped_daily={self.grouped_daily}, derived={self.derived})"

    def close(self) -> None:
        self.client.close()

    def get_aggregates(self, ticker: str, multiplier: int, timespan: str, start: date | str, end: date | str, *,
                       limit: int = 5000, adjusted: bool = True, sort: str = "asc",
                       stats: RequestStats | None = None) -> FetchResult:
        """Like :meth:`PolygonClient.get_aggregates`; the run's whole range of 1d or derivable bars from the caches."""
        stats = RequestStats() if stats is None else stats
        whole = (str(start), str(end)) == (str(self.start), str(self.end)) and adjusted and sort == "asc"
        name = next((tf.name for tf in TIMEFRAMES.values() if (tf.multiplier, tf.timespan) == (multiplier, timespan)),
                    None)
        if whole and ticker in self._symbols:
            if name == "1d" and self.grouped_daily:
                bars = self._daily_bars(ticker, stats)
                if bars is not None:
                    return FetchResult(bars, stats)
            elif self.derived and (name == "1m" or name in DERIVABLE):
                return FetchResult(self._derived_bars(ticker, TIMEFRAMES[name], limit, stats), stats)
        elif self.derived and name == "1m" and ticker in self._symbols and adjusted and sort == "asc":
            window = self._minute_window(ticker, date.fromisoformat(str(start)), date.fromisoformat(str(end)),
                                         limit, stats)
            if window is not None:
                return FetchResult(window, stats)
        return self.client.get_aggregates(ticker, multiplier, timespan, start, end, limit=limit, adjusted=adjusted,
                                          sort=sort, stats=stats)

    def _daily_bars(self, ticker: str, stats: RequestStats) -> pd.DataFrame | None:
        """``ticker``'s daily bars from the run's grouped bars (fetched now if no job has yet); None if never named."""
        with self._daily_lock:
            if self._daily is None:
                days = self._grouped_days(stats)
                frame = pd.concat(days, ignore_index=True) if days else pd.DataFrame(columns=["symbol", *BAR_COLUMNS])
                frame = frame[frame["symbol"].isin(self._symbols)]
                self._daily = {str(s): g[BAR_COLUMNS].sort_values("time", ignore_index=True)
                               for s, g in frame.groupby("symbol", sort=False)}
            bars = self._daily.get(ticker)
        return None if bars is None else bars.copy()

    def _grouped_days(self, stats: RequestStats) -> list[pd.DataFrame]:
        """Every weekday's grouped bars, fetched concurrently, each day's cost counted into ``stats`` in day order."""
        grouped = _grouped_source(self.client)
        days = weekdays(self.start, self.end)
        if not days:
            return []
        costs = [RequestStats() for _ in days]  # merged even when a day fails: its cost was paid
        try:
            with ThreadPoolExecutor(min(GROUPED_FETCHERS, len(days)), thread_name_prefix="grouped-daily") as pool:
                fetch = in_this_stage(lambda day_cost: grouped(day_cost[0], stats=day_cost[1]).bars)
                return list(pool.map(fetch, zip(days, costs, strict=True)))
        finally:
            for cost in costs:
                stats.merge(cost)

    def _take_minutes(self, ticker: str, limit: int, stats: RequestStats) -> pd.DataFrame:
        """``ticker``'s minutes over the run's range for one taker (fetched by the first), freed once the last has
        taken them. The caller holds the symbol's lock."""
        minutes = self._minutes.get(ticker)
        if minutes is None:
            minutes = self.client.get_aggregates(ticker, 1, "minute", self.start, self.end, limit=limit,
                                                 stats=stats).bars
            self._minutes[ticker] = minutes
        self._takers[ticker] -= 1
        if self._takers[ticker] <= 0:
            self._minutes.pop(ticker, None)  # every sharing job has its bars: free the symbol's minutes
        return minutes

    def _minute_window(self, ticker: str, first: date, last: date, limit: int,
                       stats: RequestStats) -> pd.DataFrame | None:
        """``ticker``'s 1m bars of the New York days [first, last] from its shared minutes (fetched now if none of
        its jobs has yet); None when the days fall outside the run's range or every taker has been served."""
        if first < self.start or last > self.end:
            return None
        with self._symbol_locks[ticker]:
            if self._takers[ticker] <= 0:
                return None
            minutes = self._take_minutes(ticker, limit, stats)
        a, b = minutes["time"].searchsorted([pd.Timestamp(ny_day_start(first)),
                                             pd.Timestamp(ny_day_start(last + timedelta(days=1)))])
        return minutes[BAR_COLUMNS].iloc[a:b].reset_index(drop=True)

    def _derived_bars(self, ticker: str, tf: Timeframe, limit: int, stats: RequestStats) -> pd.DataFrame:
        """``ticker``'s ``tf`` bars folded from its 1m bars (fetched now if none of its jobs has yet)."""
        with self._symbol_locks[ticker]:
            minutes = self._take_minutes(ticker, limit, stats)
        return minutes[BAR_COLUMNS].reset_index(drop=True) if tf.name == "1m" else derive_bars(minutes, tf.name)


def share_fetches(client: AggregatesSource, symbols: tuple[str, ...], timeframes: tuple[str, ...], start: date,
                  end: date, *, grouped_daily: bool, derived: bool, page_limit: int = 5000,
                  minute_windows: int = 0) -> AggregatesSource:
    """``client`` behind :class:`SharedFetch` when either fix is on and saves requests here, else unchanged."""
    shared = SharedFetch(client, symbols, timeframes, start, end, grouped_daily=grouped_daily, derived=derived,
                         page_limit=page_limit, minute_windows=minute_windows)
    return shared if shared.grouped_daily or shared.derived else client


__all__ = ["DERIVABLE", "GROUPED_FETCHERS", "SharedFetch", "pages", "share_fetches", "weekdays"]
