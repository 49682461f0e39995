"""The Polygon aggregates client: ``next_url`` pagination, parsing, page retries; one request at a time below it.

Split along httpx's line: :class:`~perflab.api.transport.Transport` sends one request (session, Bearer auth,
pacing, the whole-body deadline, typed errors); :class:`PolygonClient` pages, parses and retries. The API key
comes from ``POLYGON_API_KEY`` and is only ever sent in the ``Authorization`` header; ``next_url`` (which carries
no key) is rebased onto the configured base URL before it is followed. Retrying (``backoff``) is a switchable
policy so the baseline and the fix run the same code path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import orjson
import pandas as pd
from tenacity import Retrying, wait_exponential_jitter

import perflab.retry
from perflab.api import errors
from perflab.api.inflight import InflightLimit
from perflab.api.ratelimit import AdaptivePacer
from perflab.api.transport import Reply, Transport
from perflab.errors import ConfigError, InputError
from perflab.measure.results import RequestStats
from perflab.redact import redact, register_secret
from perflab.retry import RetryCallState, run_with
from perflab.timeframes import NY

DEFAULT_BASE_URL = "https://api.polygon.io"
LOCAL_API_KEY = "perflab-local-key"  # what a local simulator accepts when POLYGON_API_KEY is unset
BAR_COLUMNS = ["time", "open", "high", "low", "close", "volume", "vwap", "transactions"]
PARSE_SLOTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
"""Pages parsed at once, process-wide. A parsed page is a dict per bar, about 25x its JSON bytes (20,000 bars:
~12 MB) until it becomes columns; with 64 requests in flight their answers arrived together and were all held
parsed at once. Parsing holds the GIL, so more slots than cores add memory, not speed; waiting for the wire is
outside the slot."""
_FIELD_MAP = {"t": "time", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap",
              "n": "transactions"}


def is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (where the simulator's local key is acceptable)."""
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class RetryPolicy(perflab.retry.RetryPolicy):
    """API pages (the ``api.backoff`` fix): exponential backoff with jitter, bounded attempts, honours Retry-After.

    Auth and bad-request errors are never retried (:func:`~perflab.api.errors.is_retryable`); a server's
    Retry-After hint is obeyed up to ``max_retry_after_s`` so one hostile header cannot stall a run.
    """

    retry_on: Callable[[BaseException], bool] = field(default=errors.is_retryable, repr=False)
    attempts: int = 6
    initial_s: float = 0.05
    max_s: float = 5.0
    jitter_s: float = 0.05
    max_retry_after_s: float = 60.0

    def wait_s(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the larger of the backoff and the server's hint."""
        hint = getattr(state.outcome.exception(), "retry_after", None) or 0.0
        backoff = wait_exponential_jitter(initial=self.initial_s, max=self.max_s, jitter=self.jitter_s)(state)
        return max(backoff, min(hint, self.max_retry_after_s))

    def retrying(self, before_sleep: Callable[[RetryCallState], Any] | None = None) -> Retrying:
        """The family's ``Retrying``, waiting :meth:`wait_s` (unless ``wait`` says otherwise)."""
        return super().retrying(before_sleep).copy(wait=self.wait or self.wait_s)


@dataclass
class FetchResult:
    """The bars of one (ticker, timeframe, range) and what fetching them cost (the caller's accumulator, if given)."""

    bars: pd.DataFrame
    stats: RequestStats


class AggregatesSource(Protocol):
    """What the pipeline fetches bars through: a :class:`PolygonClient`, or one behind the circuit breaker."""

    @property
    def base_url(self) -> str: ...

    def get_aggregates(self, ticker: str, multiplier: int, timespan: str, start: date | str, end: date | str, *,
                       limit: int = 5000, adjusted: bool = True, sort: str = "asc",
                       stats: RequestStats | None = None) -> FetchResult: ...

    def close(self) -> None: ...


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS}).astype(
        {"time": "datetime64[ms, UTC]", "transactions": "int64"})


def bars_frame(results: list[dict]) -> pd.DataFrame:
    """Polygon ``results`` to a frame with our column names, sorted by time, duplicates removed.

    Pages normally come sorted and unique: then the columns are built straight from the dicts (about
    4x cheaper than pandas' record parsing, which ran on every request of every worker).
    """
    if not results:
        return empty_bars()
    times = [r.get("t") for r in results]
    if None not in times:
        t = np.array(times, dtype=np.int64)
        if len(t) < 2 or bool((t[1:] > t[:-1]).all()):
            data = {"time": pd.to_datetime(t, unit="ms", utc=True)}
            data.update({name: np.array([r.get(key) for r in results], dtype=np.float64)
                         for key, name in _FIELD_MAP.items() if name != "time"})
            data["transactions"] = np.nan_to_num(data["transactions"], nan=0.0).astype(np.int64)
            return pd.DataFrame(data)
    df = pd.DataFrame.from_records(results).rename(columns=_FIELD_MAP)
    for col in BAR_COLUMNS:
        if col not in df:
            df[col] = 0 if col == "transactions" else float("nan")
    df = df[BAR_COLUMNS].drop_duplicates(subset="time", keep="last").sort_values("time", ignore_index=True)
    df["time"] = pd.to_datetime(df["time"], unit="ms", utc=True)
    df["transactions"] = df["transactions"].fillna(0).astype("int64")
    return df


def check_base_url(url: str, source: str = "base URL") -> str:
    """``url`` without a trailing slash, or an InputError naming the rule it breaks, before any request is made.

    A base URL is ``http(s)://host[:port]`` with an optional path prefix; ``source`` names where it came from.
    """
    url = url.strip()
    shown = f"{source} {redact(url)!r}"
    fix = "write http://host:port or https://host, e.g. https://api.polygon.io"
    parts = urlsplit(url)
    if any(c.isspace() for c in url):
        raise InputError(f"{shown} contains a space: {fix}")
    if parts.scheme.lower() not in ("http", "https"):
        raise InputError(f"{shown} is not an http(s) URL: {fix}")
    if not parts.hostname:
        raise InputError(f"{shown} has no host name: {fix}")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise InputError(f"{shown} has a port that is not a number from 1 to 65535: {fix}")
    if parts.query or parts.fragment:
        raise InputError(f"{shown} has a query or fragment: a base URL is scheme, host, port and a path prefix only")
    return url.rstrip("/")


class PolygonClient:
    """Fetch aggregate bars. Thread-safe: workers may share one client, its connection pool and its pacer."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, pacer: AdaptivePacer | None = None, pool_size: int = 32,
                 inflight: InflightLimit | None = None):
        self.base_url = check_base_url(base_url or os.environ.get("POLYGON_BASE_URL") or DEFAULT_BASE_URL,
                                       "base URL" if base_url else "POLYGON_BASE_URL")
        key = api_key if api_key is not None else os.environ.get("POLYGON_API_KEY")
        if not key:
            if not is_local(self.base_url):
                raise ConfigError(f"POLYGON_API_KEY is not set: export your Polygon key to fetch from {self.base_url}")
            key = LOCAL_API_KEY
        register_secret(key)
        self.retry = retry
        self.transport = Transport(self.base_url, key, timeout=timeout, pacer=pacer, pool_size=pool_size,
                                   inflight=inflight)

    def __repr__(self) -> str:
        return f"PolygonClient(base_url={self.base_url!r})"

    @property
    def pacer(self) -> AdaptivePacer | None:
        """The transport's pacer (the ``api.pacing`` fix), if any."""
        return self.transport.pacer

    def close(self) -> None:
        self.transport.close()

    def _url(self, path_and_query: str) -> str:
        parts = urlsplit(path_and_query)
        return f"{self.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _page(self, url: str, params: dict | None, stats: RequestStats) -> tuple[pd.DataFrame, str | None]:
        """One page's bars and its ``next_url``: a request through the transport, then parsed into columns in one of
        the ``PARSE_SLOTS`` (a broken body is a retryable error)."""
        reply = self.transport.get(url, params, stats)
        with PARSE_SLOTS:
            body = _aggregates_body(reply)
            return bars_frame(body.get("results") or []), body.get("next_url")

    def get_aggregates(self, ticker: str, multiplier: int, timespan: str, start: date | str, end: date | str, *,
                       limit: int = 5000, adjusted: bool = True, sort: str = "asc",
                       stats: RequestStats | None = None) -> FetchResult:
        """All bars for the range, following ``next_url`` until the last page; duplicates removed.

        Requests and retries are counted into ``stats`` (a caller's accumulator, e.g. a job's record) as they
        happen, so when a fetch fails its cost is already there; the result's ``stats`` is that accumulator, or a
        new one when none is given.
        """
        stats = RequestStats() if stats is None else stats

        def count_retry(state: RetryCallState) -> None:
            stats.retries += 1

        url = self._url(f"/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}")
        params: dict | None = {"adjusted": str(adjusted).lower(), "sort": sort, "limit": limit}
        pages: list[pd.DataFrame] = []
        while True:
            frame, next_url = run_with(self.retry, partial(self._page, url, params, stats), count_retry)
            pages.append(frame)
            if not next_url:
                break
            url, params = self._url(next_url), None
        return FetchResult(join_pages(pages), stats)

    def get_grouped_daily(self, day: date | str, *, adjusted: bool = True, include_otc: bool = False,
                          stats: RequestStats | None = None) -> FetchResult:
        """Every ticker's daily bar for one date in one request (grouped daily): a ``symbol`` column plus the bars.

        Polygon stamps grouped bars at the end of the window (16:00 New York); each row's ``time`` is its New York
        session date's midnight instead, so a row equals the ticker's per-ticker ``1d`` bar. Weekends and holidays
        give no rows. Requests and retries are counted into ``stats`` as in :meth:`get_aggregates`.
        """
        stats = RequestStats() if stats is None else stats

        def count_retry(state: RetryCallState) -> None:
            stats.retries += 1

        url = self._url(f"/v2/aggs/grouped/locale/us/market/stocks/{day}")
        params = {"adjusted": str(adjusted).lower(), "include_otc": str(include_otc).lower()}
        body = run_with(self.retry, partial(self._grouped_page, url, params, stats), count_retry)
        return FetchResult(self._grouped_frame(body.get("results") or []), stats)

    def _grouped_page(self, url: str, params: dict, stats: RequestStats) -> dict:
        """One grouped daily body; rows without a ticker make it a retryable malformed response."""
        reply = self.transport.get(url, params, stats)
        body = _aggregates_body(reply)
        if any(not r.get("T") for r in body.get("results") or []):
            raise errors.MalformedResponseError(f"response from {redact(urlsplit(reply.url).path)} has a bar "
                                                "without its ticker (T)", status=reply.status)
        return body

    @staticmethod
    def _grouped_frame(results: list[dict]) -> pd.DataFrame:
        """Grouped ``results`` to ``symbol`` + the bar columns, one row per symbol, ``time`` at the session midnight."""
        frame = bars_frame([]) if not results else pd.DataFrame({
            "time": pd.to_datetime(np.array([r["t"] for r in results], np.int64), unit="ms", utc=True),
            **{name: np.array([r.get(key) for r in results], np.float64)
               for key, name in _FIELD_MAP.items() if name not in ("time", "transactions")},
            "transactions": np.array([r.get("n") or 0 for r in results], np.int64),
        })
        frame.insert(0, "symbol", pd.Series([r["T"] for r in results], dtype=object))
        frame["time"] = frame["time"].dt.tz_convert(NY).dt.normalize().dt.tz_convert("UTC")
        return frame.drop_duplicates("symbol", keep="last").sort_values("symbol", ignore_index=True)


def join_pages(pages: list[pd.DataFrame]) -> pd.DataFrame:
    """One fetch's pages as one frame, sorted by time, a bar that two pages both hold kept once (the later)."""
    if len(pages) == 1:
        return pages[0]
    frame = pd.concat([p for p in pages if len(p)] or [empty_bars()], ignore_index=True)
    t = frame["time"].to_numpy()
    if len(t) < 2 or bool((t[1:] > t[:-1]).all()):
        return frame
    return frame.drop_duplicates(subset="time", keep="last").sort_values("time", ignore_index=True)


def _aggregates_body(reply: Reply) -> dict:
    """The JSON body of a 200; a body that is not the documented shape is a retryable malformed response.

    Missing or null ``results`` mean no bars, unless the counts say bars were there (then the page is broken).
    """
    where, data = redact(urlsplit(reply.url).path), reply.body
    try:
        body = orjson.loads(data)
    except ValueError:
        raise errors.MalformedResponseError(f"response from {where} is not JSON", status=reply.status,
                                            body=data[:500].decode(errors="replace")) from None
    if not isinstance(body, dict) or body.get("status") not in ("OK", "DELAYED"):
        raise errors.MalformedResponseError(f"response from {where} is not an aggregates body",
                                            status=reply.status, body=data[:500].decode(errors="replace"))
    if not body.get("results") and (body.get("resultsCount") or 0) > 0:
        raise errors.MalformedResponseError(
            f"response from {where} claims {body['resultsCount']} bars but has no results", status=reply.status,
            body=data[:500].decode(errors="replace"))
    return body


__all__ = ["PARSE_SLOTS", "AggregatesSource", "FetchResult", "PolygonClient", "RetryPolicy", "bars_frame",
           "check_base_url", "empty_bars", "join_pages"]
