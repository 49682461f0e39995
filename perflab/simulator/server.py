"""A Polygon-compatible aggregates server, meant to run in its own process (``perflab serve``).

Serves ``GET /v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}`` with the body of
the official OpenAPI schema, ``next_url`` pagination, and the grouped daily endpoint
``GET /v2/aggs/grouped/locale/us/market/stocks/{date}`` (every ticker's daily bar for one date, the same bars
as per-ticker daily requests), both with Bearer or ``apiKey`` auth, a per-key token-bucket
rate limit (429 + ``Retry-After``), a seeded latency per request that grows with the page (the cost model
of :class:`~perflab.simulator.config.SimulatorConfig`), ``Content-Encoding: gzip`` when the client accepts
it, and seeded fault injection (:mod:`perflab.simulator.faults`). ``GET /_stats`` reports the server's own
counters of API traffic (``bytes_sent``: body bytes on the wire, compressed when gzip; ``bytes_decoded``: the
same bodies before encoding, what a client reads after decoding); ``POST /_faults`` replaces the faults in force
(``GET /_faults`` shows them), so a test can trip the API and heal it.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import date
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np

from perflab.api.ratelimit import TokenBucket
from perflab.errors import InputError
from perflab.simulator import lifeline
from perflab.simulator.bars import CALENDAR_SPANS, BarArrays, bars_between, calendar_bars, daily_bars
from perflab.simulator.config import SimulatorConfig
from perflab.simulator.faults import BODY_FAULTS, ERROR_FAULTS, FaultPlan, validate_faults
from perflab.timeframes import TIMESPANS, ny_date, ny_day_end_ms, ny_midnight_ms

AGGS_PATH = re.compile(r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<mult>[^/]+)/(?P<span>[^/]+)"
                       r"/(?P<frm>[^/]+)/(?P<to>[^/]+)$")
GROUPED_PATH = re.compile(r"^/v2/aggs/grouped/locale/us/market/stocks/(?P<date>[^/]+)$")
GROUPED_CLOSE = 16 * 3_600_000  # grouped bars are stamped at the end of the window: 16:00 New York, as Polygon's
# How many base bars one bar of each timespan stands for (``limit`` counts base bars, as Polygon's does).
BASE_BARS = {"second": 1, "minute": 1, "hour": 60, "day": 1, "week": 5, "month": 21, "quarter": 63, "year": 252}
CONFIG_ENV = "PERFLAB_SIM_CONFIG"
GZIP_LEVEL = 1  # nginx's default gzip_comp_level: a 5,000-bar page shrinks ~3.7x for ~4 ms of server CPU
RATE_LIMIT_MESSAGE = ("You've exceeded the maximum requests per minute, please wait or upgrade your "
                      "subscription to continue. https://polygon.io/pricing")


class BadRequest(Exception):
    """A parameter the real API would reject with 400."""


def _parse_bound(value: str, what: str, end: bool) -> tuple[int, date]:
    """A path bound as (ms, New York day); a date ``to`` covers the whole New York day (23 or 25 hours
    long across a daylight-saving change), a date ``from`` starts at its New York midnight."""
    if value.isdigit():
        ms = int(value)
        return ms, ny_date(ms)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"Could not parse the '{what}' parameter: use YYYY-MM-DD or a millisecond timestamp.") from None
    return (ny_day_end_ms(day) if end else ny_midnight_ms(day)), day


def _bool(value: str | None, default: bool) -> bool:
    return default if value is None else value.lower() not in ("false", "0", "no")


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header admits gzip (``gzip``, ``x-gzip`` or ``*``, without ``q=0``)."""
    for item in (accept_encoding or "").split(","):
        name, *params = (part.strip().lower() for part in item.split(";"))
        if name in ("gzip", "x-gzip", "*"):
            q = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


class Simulator:
    """The server's state: config, latency and fault draws, rate-limit buckets and counters. Thread-safe."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self._rng = random.Random(config.seed)
        self._fault_rng = random.Random(config.seed + 1)
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self.faults = FaultPlan(validate_faults(config.faults))
        self.started = time.monotonic()
        self.stats: Counter = Counter()

    def draw_latency(self) -> float:
        """The next seeded uniform draw in [0, 1) that places this request's base latency in ``latency_s``."""
        with self._lock:
            return self._rng.random()

    def wait_out(self, started: float, u: float, bars: int = 0, wire_bytes: int = 0) -> None:
        """Sleep until the request's modelled cost (scaled) has passed since ``started``.

        The server's real work (bars, JSON, gzip) counts toward the modelled server time instead of adding to it.
        """
        cost = self.config.request_cost_s(u, bars, wire_bytes) * self.config.time_scale
        remaining = started + cost - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def snapshot(self) -> dict:
        with self._lock:
            return {**self.stats, "uptime_s": round(time.monotonic() - self.started, 3)}

    def set_faults(self, faults: object) -> dict:
        plan = FaultPlan(validate_faults(faults))
        with self._lock:
            self.faults = plan
        return plan.faults

    def api_key(self, headers, query: dict) -> str | None:
        """The key the request presented, if it is the accepted one."""
        auth = headers.get("Authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else (query.get("apiKey") or [""])[0]
        return key if key and key == self.config.api_key else None

    def rate_limit_wait(self, key: str) -> float:
        """0.0 when ``key`` may be served now, else seconds until its bucket has a token."""
        if not self.config.rate_limit_per_s:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                rate = self.config.rate_limit_per_s
                bucket = self._buckets[key] = TokenBucket(rate, self.config.burst)
        return bucket.try_take()

    def in_outage(self) -> bool:
        return self.faults.in_outage(time.monotonic() - self.started)

    def draw_fault(self, kinds: tuple[str, ...]) -> str | None:
        with self._lock:
            fault = self.faults.draw(self._fault_rng, kinds)
            if fault:
                self.stats[f"fault_{fault}"] += 1
            return fault

    def pick(self, options: tuple):
        with self._lock:
            return self._fault_rng.choice(options)

    def aggregates(self, host: str, m: re.Match, query: dict) -> dict:
        """The 200 body for one page (``query`` may carry a ``next_url`` cursor), or raise :class:`BadRequest`."""
        query = _query_from_cursor(query)
        ticker, span = m["ticker"], m["span"]
        if span not in TIMESPANS:
            raise BadRequest(f"Unknown timespan '{span}': use one of {', '.join(TIMESPANS)}.")
        if not m["mult"].isdigit() or int(m["mult"]) < 1:
            raise BadRequest("The multiplier must be a positive integer.")
        mult = int(m["mult"])
        frm_ms, frm_day = _parse_bound(m["frm"], "from", end=False)
        to_ms, to_day = _parse_bound(m["to"], "to", end=True)
        if frm_ms > to_ms:
            raise BadRequest("The 'to' parameter must be on or after the 'from' parameter.")
        adjusted = _bool((query.get("adjusted") or [None])[0], True)
        sort = (query.get("sort") or ["asc"])[0]
        if sort not in ("asc", "desc"):
            raise BadRequest("sort must be 'asc' or 'desc'.")
        try:
            limit = int((query.get("limit") or ["5000"])[0])
        except ValueError:
            raise BadRequest("limit must be an integer.") from None
        limit = max(1, min(limit, 50_000))
        body = {"ticker": ticker, "queryCount": 0, "resultsCount": 0, "adjusted": adjusted,
                "status": "OK", "request_id": uuid.uuid4().hex}
        if not self.config.knows(ticker):
            return body
        if span in CALENDAR_SPANS:
            bars = calendar_bars(self.config.seed, ticker, mult, span, frm_ms, to_ms)
        else:
            bars = bars_between(self.config.seed, ticker, mult, span, frm_day, to_day)
            bars = bars.take((bars.t >= frm_ms) & (bars.t <= to_ms))
        if sort == "desc":
            bars = bars.take(slice(None, None, -1))
        per_page = max(1, limit // (BASE_BARS[span] * mult))
        page = bars.take(slice(0, per_page))
        body["queryCount"] = body["resultsCount"] = len(page)
        if len(page):
            body["results"] = _results(page)
        if len(bars) > per_page:
            # asc: the next page starts at the next bar; desc: it ends just before the last bar sent
            frm, to = (int(bars.t[per_page]), m["to"]) if sort == "asc" else (m["frm"], int(page.t[-1]) - 1)
            cursor = base64.urlsafe_b64encode(json.dumps({"adjusted": adjusted, "sort": sort, "limit": limit}).encode())
            body["next_url"] = (f"http://{host}/v2/aggs/ticker/{ticker}/range/{mult}/{span}/{frm}/{to}?"
                                + urlencode({"cursor": cursor.decode()}))
        self.count("bars_served", len(page))
        return body


    def grouped_daily(self, day_text: str, query: dict) -> dict:
        """The 200 body of the grouped daily endpoint for one date (no bars on weekends), or raise BadRequest.

        Each ticker's bar has the numbers of its per-ticker daily bar; ``t`` is the end of the window (16:00 New
        York on that date), as the official schema and Polygon's answers have it. OTC tickers only when asked.
        """
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise BadRequest("Could not parse the 'date' parameter: use YYYY-MM-DD.") from None
        adjusted = _bool((query.get("adjusted") or [None])[0], True)
        include_otc = _bool((query.get("include_otc") or [None])[0], False)
        otc = tuple(sorted(self.config.otc_tickers)) if include_otc else ()
        tickers = self.config.universe + otc
        bars = daily_bars(self.config.seed, tickers, day)
        body = {"adjusted": adjusted, "queryCount": len(bars), "resultsCount": len(bars), "status": "OK",
                "request_id": uuid.uuid4().hex}
        if len(bars):
            results = [{"T": ticker, **row} for ticker, row in zip(tickers, _results(bars))]
            for row in results:
                row["t"] += GROUPED_CLOSE
            for row in results[len(self.config.universe):]:
                row["otc"] = True  # the schema: "left off if false"
            body["results"] = results
        self.count("bars_served", len(bars))
        return body


def _results(page: BarArrays) -> list[dict]:
    cols = [page.v.tolist(), page.vw.tolist(), page.o.tolist(), page.c.tolist(), page.h.tolist(),
            page.l.tolist(), page.t.tolist(), page.n.astype(np.int64).tolist()]
    return [{"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": lo, "t": t, "n": n}
            for v, vw, o, c, h, lo, t, n in zip(*cols)]


def _query_from_cursor(query: dict) -> dict:
    """Expand a ``cursor`` back into the query options it encodes."""
    if "cursor" not in query:
        return query
    try:
        opts = json.loads(base64.urlsafe_b64decode(query["cursor"][0]))
    except (ValueError, TypeError):
        raise BadRequest("Invalid cursor.") from None
    return {**{k: [str(v).lower() if isinstance(v, bool) else str(v)] for k, v in opts.items()}, **{
        k: v for k, v in query.items() if k != "cursor"}}


def _spoil(body: dict, fault: str, pick) -> bytes:
    """The bytes of a 200 body damaged by ``fault`` (a slow body is sent intact, only slowly)."""
    if fault == "null_results":
        body = {**body, "results": None}
    elif fault == "duplicate" and body.get("results"):
        results = body["results"]
        k = max(1, len(results) // 10)
        start = pick(range(len(results)))
        results = results[:start + k] + results[start:start + k] + results[start + k:]
        body = {**body, "results": results, "resultsCount": len(results), "queryCount": len(results)}
    data = json.dumps(body).encode()
    if fault == "malformed":
        data = data[: max(1, len(data) // 2)]
    return data


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "perflab-simulator"
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle + delayed ACK would add ~40 ms
    sim: Simulator

    def log_message(self, format, *args):
        return

    def _encode(self, data: bytes) -> tuple[bytes, dict]:
        """The body as it goes on the wire, and its headers: gzip when the client accepts it (as Polygon serves)."""
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0), {"Content-Encoding": "gzip"}
        return data, {}

    def _send_bytes(self, status: int, data: bytes, headers: dict | None = None, trickle_s: float = 0.0) -> None:
        wire, encoding = self._encode(data)
        self._send_wire(status, wire, len(data), {**encoding, **(headers or {})}, trickle_s)

    def _send_wire(self, status: int, wire: bytes, decoded: int, headers: dict, trickle_s: float = 0.0) -> None:
        """Send an encoded body (``decoded``: its length before encoding), trickled over ``trickle_s`` if > 0."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(wire)))
        self.send_header("Vary", "Accept-Encoding")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not urlsplit(self.path).path.startswith("/_"):  # /_stats and /_faults are the lab's, not API traffic
            self.sim.count(f"status_{status}")  # before the body goes out, so the client's next /_stats sees it
            self.sim.count("bytes_sent", len(wire))
            self.sim.count("bytes_decoded", decoded)
        if trickle_s > 0:
            step = max(1, len(wire) // 10)
            chunks = [wire[i:i + step] for i in range(0, len(wire), step)]
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(trickle_s / len(chunks))
        else:
            self.wfile.write(wire)

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), headers)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, {"status": "ERROR", "request_id": uuid.uuid4().hex, "error": message}, headers)

    def _rate_limited(self, wait_s: float) -> None:
        headers = {"Retry-After": f"{wait_s:.3f}"} if self.sim.config.retry_after else None
        self._error(429, RATE_LIMIT_MESSAGE, headers)

    def _reset(self) -> None:
        """Close the connection without answering (the client sees a reset / remote disconnect)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_POST(self):
        if urlsplit(self.path).path != "/_faults":
            self._send(404, {"status": "NOT_FOUND", "request_id": uuid.uuid4().hex, "message": "Not found."})
            return
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            faults = self.sim.set_faults(json.loads(raw or b"{}"))
        except (ValueError, InputError) as exc:
            self._error(400, str(exc))
            return
        self._send(200, {"status": "OK", "faults": faults})

    def do_GET(self):
        started = time.monotonic()
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/_stats":
            self._send(200, self.sim.snapshot())
            return
        if parts.path == "/_faults":
            self._send(200, {"status": "OK", "faults": self.sim.faults.faults})
            return
        self.sim.count("requests")
        host = self.headers.get("Host", "127.0.0.1")
        if m := AGGS_PATH.match(parts.path):
            answer = partial(self.sim.aggregates, host, m, query)
        elif g := GROUPED_PATH.match(parts.path):
            answer = partial(self.sim.grouped_daily, g["date"], query)
        else:
            self._send(404, {"status": "NOT_FOUND", "request_id": uuid.uuid4().hex, "message": "Not found."})
            return
        key = self.sim.api_key(self.headers, query)
        if key is None:
            self._send(401, {"status": "NOT_AUTHORIZED", "request_id": uuid.uuid4().hex,
                             "message": "Unknown API Key. Please provide a valid API key."})
            return
        self._serve_api(key, answer, started)

    def _serve_api(self, key: str, answer: Callable[[], dict], started: float) -> None:
        """One API request through outage, rate limit, faults and the cost model; ``answer`` builds the 200 body."""
        sim = self.sim
        if sim.in_outage():
            sim.count("fault_outage")
            self._error(503, "Service Unavailable")
            return
        wait = sim.rate_limit_wait(key)
        if wait > 0:
            sim.count("rate_limited")
            self._rate_limited(wait)
            return
        fault = sim.draw_fault(ERROR_FAULTS)
        if fault == "burst_429":
            self._rate_limited(1.0 / sim.config.rate_limit_per_s if sim.config.rate_limit_per_s else 0.05)
            return
        u = sim.draw_latency()
        if fault in ("server_error", "gateway_timeout", "reset"):
            sim.wait_out(started, u)  # an error page carries no bars: the base cost only
        if fault == "server_error":
            self._error(sim.pick((500, 502, 503)), "Internal server error")
            return
        if fault == "gateway_timeout":
            time.sleep(sim.faults.delay("gateway_timeout_s"))
            self._error(504, "Gateway Timeout")
            return
        if fault == "reset":
            self._reset()
            return
        try:
            body = answer()
        except BadRequest as exc:
            sim.wait_out(started, u)
            self._error(400, str(exc))
            return
        spoil = sim.draw_fault(BODY_FAULTS)
        data = json.dumps(body).encode() if spoil is None else _spoil(body, spoil, sim.pick)
        wire, headers = self._encode(data)
        sim.wait_out(started, u, body["resultsCount"], len(wire))
        trickle_s = sim.faults.delay("slow_body_s") if spoil == "slow_body" else 0.0
        self._send_wire(200, wire, len(data), headers, trickle_s)


class SimulatorServer(ThreadingHTTPServer):
    """One thread per connection (keep-alive friendly) and a deep accept queue for many concurrent clients."""

    daemon_threads = True
    request_queue_size = 128


def make_server(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
    handler = type("BoundHandler", (Handler,), {"sim": Simulator(config)})
    return SimulatorServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or, with ``--parent-pid``, until that parent is gone); the first stdout line is
    ``perflab simulator listening on URL``."""
    parser = argparse.ArgumentParser(prog="perflab-simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(lifeline.PARENT_PID_ARG, type=int, help="exit when this parent process is gone")
    parser.add_argument(lifeline.PDEATHSIG_ARG, action="store_true", help="also ask Linux to signal its death")
    args = parser.parse_args(argv)
    if args.parent_pid:
        lifeline.exit_with_parent(args.parent_pid, pdeathsig=args.pdeathsig)
    raw = os.environ.get(CONFIG_ENV)
    config = SimulatorConfig.from_json(raw) if raw else SimulatorConfig()
    server = make_server(config, args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    host, port = server.server_address[:2]
    print(f"perflab simulator listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
