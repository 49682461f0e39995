"""The Polygon aggregates client: one ``requests.Session``, Bearer auth, ``next_url`` pagination, typed errors.

The API key comes from ``POLYGON_API_KEY`` and is only ever sent in the ``Authorization`` header;
``next_url`` (which carries no key) is rebased onto the configured base URL before it is followed.
Retrying (``backoff``) is a switchable policy so the baseline and the fix run the same code path.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlsplit

import pandas as pd
import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from perflab.api import errors
from perflab.errors import ConfigError
from perflab.redact import redact, register_secret

DEFAULT_BASE_URL = "https://api.polygon.io"
LOCAL_API_KEY = "perflab-local-key"  # what a local simulator accepts when POLYGON_API_KEY is unset
BAR_COLUMNS = ["time", "open", "high", "low", "close", "volume", "vwap", "transactions"]
_FIELD_MAP = {"t": "time", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vw": "vwap",
              "n": "transactions"}


def is_local(url: str) -> bool:
    """Whether ``url`` points at this machine (where the simulator's local key is acceptable)."""
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


@dataclass
class ClientStats:
    """What the client saw: requests, retries, 429s, bytes and each request's latency in seconds."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    bytes_received: int = 0
    latencies: list[float] = field(default_factory=list)

    def merge(self, other: "ClientStats") -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.rate_limited += other.rate_limited
        self.timeouts += other.timeouts
        self.bytes_received += other.bytes_received
        self.latencies.extend(other.latencies)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable errors: exponential with jitter, bounded attempts, honours Retry-After."""

    attempts: int = 6
    initial_s: float = 0.05
    max_s: float = 5.0


@dataclass
class FetchResult:
    """The bars of one (ticker, timeframe, range) and what fetching them cost."""

    bars: pd.DataFrame
    stats: ClientStats


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS}).astype(
        {"time": "datetime64[ms, UTC]", "transactions": "int64"})


def bars_frame(results: list[dict]) -> pd.DataFrame:
    """Polygon ``results`` to a frame with our column names, sorted by time, duplicates removed."""
    if not results:
        return empty_bars()
    df = pd.DataFrame.from_records(results).rename(columns=_FIELD_MAP)
    for col in BAR_COLUMNS:
        if col not in df:
            df[col] = 0 if col == "transactions" else float("nan")
    df = df[BAR_COLUMNS].drop_duplicates(subset="time", keep="last").sort_values("time", ignore_index=True)
    df["time"] = pd.to_datetime(df["time"], unit="ms", utc=True)
    df["transactions"] = df["transactions"].fillna(0).astype("int64")
    return df


class PolygonClient:
    """Fetch aggregate bars. Thread-safe: workers may share one client and its connection pool."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, pool_size: int = 10):
        self.base_url = (base_url or os.environ.get("POLYGON_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("POLYGON_API_KEY")
        if not key:
            if not is_local(self.base_url):
                raise ConfigError(f"POLYGON_API_KEY is not set: export your Polygon key to fetch from {self.base_url}")
            key = LOCAL_API_KEY
        register_secret(key)
        self._key = key
        self.timeout = timeout
        self.retry = retry
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Authorization"] = f"Bearer {key}"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PolygonClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self.session.close()

    def _url(self, path_and_query: str) -> str:
        parts = urlsplit(path_and_query)
        return f"{self.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _get_page(self, url: str, params: dict | None, stats: ClientStats) -> dict:
        """One HTTP GET, mapped to a body or a typed error."""
        started = time.perf_counter()
        stats.requests += 1
        try:
            resp = self.session.get(url, params=params, timeout=self.timeout)
        except requests.Timeout:
            stats.timeouts += 1
            raise errors.TimeoutError(f"no answer from {redact(url)} within {self.timeout}s") from None
        except requests.ConnectionError as exc:
            raise errors.ConnectionError(f"connection to {redact(url)} failed: {redact(exc)}") from None
        finally:
            stats.latencies.append(time.perf_counter() - started)
        stats.bytes_received += len(resp.content)
        _raise_for_status(resp, stats)
        try:
            body = resp.json()
        except ValueError:
            raise errors.MalformedResponseError(
                f"response from {redact(resp.url)} is not JSON", status=resp.status_code, body=resp.text[:500]) from None
        if not isinstance(body, dict) or body.get("status") not in ("OK", "DELAYED"):
            raise errors.MalformedResponseError(
                f"response from {redact(resp.url)} is not an aggregates body", status=resp.status_code,
                body=resp.text[:500])
        return body

    def _call(self, url: str, params: dict | None, stats: ClientStats) -> dict:
        if self.retry is None:
            return self._get_page(url, params, stats)
        policy = self.retry

        def wait(state) -> float:
            exc = state.outcome.exception()
            hint = getattr(exc, "retry_after", None)
            backoff = wait_exponential_jitter(initial=policy.initial_s, max=policy.max_s)(state)
            return max(backoff, hint or 0.0)

        def count_retry(state) -> None:
            stats.retries += 1

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts), wait=wait, reraise=True, before_sleep=count_retry,
            retry=retry_if_exception(lambda e: isinstance(e, errors.PolygonError) and e.retryable),
        )
        return retrying(self._get_page, url, params, stats)

    def get_aggregates(self, ticker: str, multiplier: int, timespan: str, start: date | str, end: date | str, *,
                       limit: int = 5000, adjusted: bool = True, sort: str = "asc") -> FetchResult:
        """All bars for the range, following ``next_url`` until the last page."""
        stats = ClientStats()
        url = self._url(f"/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}")
        params: dict | None = {"adjusted": str(adjusted).lower(), "sort": sort, "limit": limit}
        results: list[dict] = []
        while True:
            body = self._call(url, params, stats)
            results.extend(body.get("results") or [])
            next_url = body.get("next_url")
            if not next_url:
                break
            url, params = self._url(next_url), None
        return FetchResult(bars_frame(results), stats)


def _raise_for_status(resp: requests.Response, stats: ClientStats) -> None:
    if resp.status_code < 400:
        return
    text = resp.text[:500]
    try:
        body = resp.json()
    except ValueError:
        body = {}
    detail = body.get("error") or body.get("message") or resp.reason
    kw = {"status": resp.status_code, "body": text, "request_id": body.get("request_id")}
    where = redact(urlsplit(resp.url).path)
    status = resp.status_code
    if status in (401, 403):
        raise errors.AuthError(f"{status} from Polygon: {detail} (check POLYGON_API_KEY)", **kw)
    if status == 429:
        stats.rate_limited += 1
        retry_after = resp.headers.get("Retry-After")
        raise errors.RateLimitError(f"429 rate limited on {where}: {detail}",
                                    retry_after=float(retry_after) if retry_after else None, **kw)
    if status == 400:
        raise errors.BadRequestError(f"400 bad request on {where}: {detail}", **kw)
    if status == 404:
        raise errors.NotFoundError(f"404 not found: {where}", **kw)
    if status >= 500:
        raise errors.ServerError(f"{status} server error on {where}: {detail}", **kw)
    raise errors.PolygonError(f"{status} on {where}: {detail}", **kw)


__all__ = ["PolygonClient", "FetchResult", "ClientStats", "RetryPolicy", "bars_frame", "empty_bars"]
