"""The Polygon aggregates client: one ``requests.Session``, Bearer auth, ``next_url`` pagination, typed errors.

The API key comes from ``POLYGON_API_KEY`` and is only ever sent in the ``Authorization`` header;
``next_url`` (which carries no key) is rebased onto the configured base URL before it is followed.
Retrying (``backoff``) is a switchable policy so the baseline and the fix run the same code path.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from perflab.api import errors
from perflab.api.ratelimit import AdaptivePacer
from perflab.errors import ConfigError, InputError
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

    def merge(self, other: ClientStats) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.rate_limited += other.rate_limited
        self.timeouts += other.timeouts
        self.bytes_received += other.bytes_received
        self.latencies.extend(other.latencies)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retryable errors: exponential with jitter, bounded attempts, honours Retry-After.

    Auth and bad-request errors are never retried (they are not ``retryable``); a server's Retry-After
    hint is obeyed up to ``max_retry_after_s`` so one hostile header cannot stall a run.
    """

    attempts: int = 6
    initial_s: float = 0.05
    max_s: float = 5.0
    jitter_s: float = 0.05
    max_retry_after_s: float = 60.0

    def wait_s(self, state) -> float:
        """Seconds before the next attempt: the larger of the backoff and the server's hint."""
        hint = getattr(state.outcome.exception(), "retry_after", None) or 0.0
        backoff = wait_exponential_jitter(initial=self.initial_s, max=self.max_s, jitter=self.jitter_s)(state)
        return max(backoff, min(hint, self.max_retry_after_s))


@dataclass
class FetchResult:
    """The bars of one (ticker, timeframe, range) and what fetching them cost."""

    bars: pd.DataFrame
    stats: ClientStats


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
                 retry: RetryPolicy | None = None, pacer: AdaptivePacer | None = None, pool_size: int = 32):
        self.base_url = check_base_url(base_url or os.environ.get("POLYGON_BASE_URL") or DEFAULT_BASE_URL,
                                       "base URL" if base_url else "POLYGON_BASE_URL")
        key = api_key if api_key is not None else os.environ.get("POLYGON_API_KEY")
        if not key:
            if not is_local(self.base_url):
                raise ConfigError(f"POLYGON_API_KEY is not set: export your Polygon key to fetch from {self.base_url}")
            key = LOCAL_API_KEY
        register_secret(key)
        self._key = key
        self.timeout = timeout
        self.retry = retry
        self.pacer = pacer
        self.session = requests.Session()
        # The environment (proxies, CA bundle) is read once here instead of on every request: with
        # trust_env, requests stats ~/.netrc and re-reads proxy variables per call, a cost every worker paid.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:
        return f"PolygonClient(base_url={self.base_url!r})"

    def close(self) -> None:
        self.session.close()

    def _url(self, path_and_query: str) -> str:
        parts = urlsplit(path_and_query)
        return f"{self.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def _download(self, url: str, params: dict | None, stats: ClientStats) -> tuple[requests.Response, bytes]:
        """One HTTP GET read to the end within ``timeout`` seconds in total (a trickling body times out too)."""
        started = time.perf_counter()
        deadline = started + self.timeout
        stats.requests += 1
        try:
            resp = self.session.get(url, params=params, timeout=self.timeout, stream=True)
            chunks = []
            for chunk in resp.iter_content(1 << 16):
                chunks.append(chunk)
                if time.perf_counter() > deadline:
                    resp.close()
                    raise requests.Timeout
        except requests.Timeout:
            stats.timeouts += 1
            raise errors.TimeoutError(f"no complete answer from {redact(url)} within {self.timeout}s") from None
        except requests.RequestException as exc:
            raise errors.connection_error(redact(self.base_url), exc) from None
        finally:
            stats.latencies.append(time.perf_counter() - started)
        data = b"".join(chunks)
        stats.bytes_received += len(data)
        return resp, data

    def _get_page(self, url: str, params: dict | None, stats: ClientStats) -> dict:
        """One paced HTTP GET, mapped to a body or a typed error."""
        if self.pacer is not None:
            self.pacer.acquire()
        resp, data = self._download(url, params, stats)
        try:
            _raise_for_status(resp, data, stats)
        except errors.RateLimitError as exc:
            if self.pacer is not None:
                self.pacer.on_rate_limited(exc.retry_after)
            raise
        if self.pacer is not None:
            self.pacer.on_success()
        return _aggregates_body(resp, data)

    def _call(self, url: str, params: dict | None, stats: ClientStats) -> dict:
        if self.retry is None:
            return self._get_page(url, params, stats)

        def count_retry(state) -> None:
            stats.retries += 1

        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts), wait=self.retry.wait_s, reraise=True,
            before_sleep=count_retry,
            retry=retry_if_exception(lambda e: isinstance(e, errors.PolygonError) and e.retryable),
        )
        return retrying(self._get_page, url, params, stats)

    def get_aggregates(self, ticker: str, multiplier: int, timespan: str, start: date | str, end: date | str, *,
                       limit: int = 5000, adjusted: bool = True, sort: str = "asc") -> FetchResult:
        """All bars for the range, following ``next_url`` until the last page; duplicates removed.

        A failure raises the typed error with ``stats`` attached, so what the failed job cost is not lost.
        """
        stats = ClientStats()
        url = self._url(f"/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}")
        params: dict | None = {"adjusted": str(adjusted).lower(), "sort": sort, "limit": limit}
        results: list[dict] = []
        try:
            while True:
                body = self._call(url, params, stats)
                results.extend(body.get("results") or [])
                next_url = body.get("next_url")
                if not next_url:
                    break
                url, params = self._url(next_url), None
        except errors.PolygonError as exc:
            exc.stats = stats
            raise
        return FetchResult(bars_frame(results), stats)


def _aggregates_body(resp: requests.Response, data: bytes) -> dict:
    """The JSON body of a 200; a body that is not the documented shape is a retryable malformed response.

    Missing or null ``results`` mean no bars, unless the counts say bars were there (then the page is broken).
    """
    where = redact(urlsplit(resp.url).path)
    try:
        body = json.loads(data)
    except ValueError:
        raise errors.MalformedResponseError(f"response from {where} is not JSON", status=resp.status_code,
                                            body=data[:500].decode(errors="replace")) from None
    if not isinstance(body, dict) or body.get("status") not in ("OK", "DELAYED"):
        raise errors.MalformedResponseError(f"response from {where} is not an aggregates body",
                                            status=resp.status_code, body=data[:500].decode(errors="replace"))
    if not body.get("results") and (body.get("resultsCount") or 0) > 0:
        raise errors.MalformedResponseError(
            f"response from {where} claims {body['resultsCount']} bars but has no results", status=resp.status_code,
            body=data[:500].decode(errors="replace"))
    return body


def _raise_for_status(resp: requests.Response, data: bytes, stats: ClientStats) -> None:
    if resp.status_code < 400:
        return
    text = data[:500].decode(errors="replace")
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    detail = body.get("error") or body.get("message") or resp.reason
    kw = {"status": resp.status_code, "body": text, "request_id": body.get("request_id")}
    where = redact(urlsplit(resp.url).path)
    status = resp.status_code
    if status in (401, 403):
        raise errors.AuthError(f"{status} from Polygon: {detail} (check POLYGON_API_KEY)", **kw)
    if status == 429:
        stats.rate_limited += 1
        raise errors.RateLimitError(f"429 rate limited on {where}: {detail}",
                                    retry_after=_seconds(resp.headers.get("Retry-After")), **kw)
    if status == 400:
        raise errors.BadRequestError(f"400 bad request on {where}: {detail}", **kw)
    if status == 404:
        raise errors.NotFoundError(f"404 not found: {where}", **kw)
    if status >= 500:
        raise errors.ServerError(f"{status} server error on {where}: {detail}", **kw)
    raise errors.PolygonError(f"{status} on {where}: {detail}", **kw)


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After header in seconds (delta-seconds, fractional allowed); an HTTP date or junk is ignored."""
    try:
        return max(0.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None


__all__ = ["ClientStats", "FetchResult", "PolygonClient", "RetryPolicy", "bars_frame", "check_base_url",
           "empty_bars"]
