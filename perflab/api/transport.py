"""One request to the Polygon API: the pooled ``requests`` session, in-flight limit, pacing, the whole-body deadline,
typed errors.

:class:`~perflab.api.client.PolygonClient` pages, parses and retries; everything about a single request happens
here, once: a slot of the in-flight limit (``api.concurrency``) is held around it, the pacer's token is taken
before it, and both are told how it went after (so a retry is limited and paced like any request); ``requests``'
exceptions become :mod:`perflab.api.errors` types, and an HTTP error status becomes its typed error. The request
counters (requests, 429s, timeouts, bytes, latency) are counted here; retries by the client, which alone knows a
request was another try.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from perflab.api import errors
from perflab.api.inflight import InflightLimit
from perflab.api.ratelimit import AdaptivePacer
from perflab.measure.results import RequestStats
from perflab.measure.timing import note_request
from perflab.redact import redact


@dataclass(frozen=True)
class Reply:
    """An answer that is not an HTTP error, read to the end: its status, the URL it came from, and its body."""

    status: int
    url: str
    body: bytes


class Transport:
    """Sends GETs with Bearer auth over one connection pool. Thread-safe: workers share its pool, pacer and limit.

    The pool holds at least ``inflight.policy.max_limit`` connections, so every request the limit lets go has one.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0, pacer: AdaptivePacer | None = None,
                 pool_size: int = 32, inflight: InflightLimit | None = None):
        self.base_url = base_url
        self.timeout = timeout
        self.pacer = pacer
        self.inflight = inflight
        if inflight is not None:
            pool_size = max(pool_size, inflight.policy.max_limit)
        self.session = requests.Session()
        # The environment (proxies, CA bundle) is read once here instead of on every request: with
        # trust_env, requests stats ~/.netrc and re-reads proxy variables per call, a cost every worker paid.
        self.session.proxies.update(requests.utils.get_environ_proxies(base_url))
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r})"

    def close(self) -> None:
        self.session.close()

    def get(self, url: str, params: dict | None, stats: RequestStats) -> Reply:
        """One limited, paced GET of ``url``, counted in ``stats``: the answer, or the typed error of its failure or
        status."""
        if self.inflight is None:
            return self._paced_get(url, params, stats)[0]
        ticket = self.inflight.acquire()
        wire_s, limited = None, False
        try:
            reply, wire_s = self._paced_get(url, params, stats)
            return reply
        except errors.RateLimitError:
            limited = True
            raise
        finally:
            self.inflight.release(ticket, wire_s, rate_limited=limited)

    def _paced_get(self, url: str, params: dict | None, stats: RequestStats) -> tuple[Reply, float]:
        """The GET behind the pacer: the answer and the seconds it took on the wire."""
        if self.pacer is not None:
            self.pacer.acquire()
        started = time.perf_counter()
        resp, data = self._download(url, params, stats)
        wire_s = time.perf_counter() - started
        try:
            _raise_for_status(resp, data, stats)
        except errors.RateLimitError as exc:
            if self.pacer is not None:
                self.pacer.on_rate_limited(exc.retry_after)
            raise
        if self.pacer is not None:
            self.pacer.on_success()
        return Reply(resp.status_code, resp.url, data), wire_s

    def _download(self, url: str, params: dict | None, stats: RequestStats) -> tuple[requests.Response, bytes]:
        """One HTTP GET read to the end within ``timeout`` seconds in total (a trickling body times out too)."""
        started = time.perf_counter()
        deadline = started + self.timeout
        stats.requests += 1
        resp = None
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
            ended = time.perf_counter()
            stats.latencies.append(ended - started)
            note_request(started, ended, None if resp is None else resp.status_code)  # for the run's trace
        data = b"".join(chunks)
        stats.bytes_received += len(data)
        return resp, data


def _raise_for_status(resp: requests.Response, data: bytes, stats: RequestStats) -> None:
    """The typed error of an HTTP error status (a 429 counted in ``stats``); nothing for a success."""
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


__all__ = ["Reply", "Transport"]
