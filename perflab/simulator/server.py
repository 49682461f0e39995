"""A Polygon-compatible aggregates server, meant to run in its own process (``perflab serve``).

Serves ``GET /v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}`` with the body of
the official OpenAPI schema, ``next_url`` pagination, Bearer or ``apiKey`` auth, a seeded latency per
request, and ``GET /_stats`` with the server's own counters.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import signal
import sys
import threading
import uuid
from collections import Counter
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np

from perflab.simulator.bars import NY, BarArrays, bars_between
from perflab.simulator.config import SimulatorConfig
from perflab.timeframes import TIMESPANS

AGGS_PATH = re.compile(r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<mult>[^/]+)/(?P<span>[^/]+)/(?P<frm>[^/]+)/(?P<to>[^/]+)$")
BASE_MINUTES = {"second": 1, "minute": 1, "hour": 60, "day": 1, "week": 5}
CONFIG_ENV = "PERFLAB_SIM_CONFIG"


class BadRequest(Exception):
    """A parameter the real API would reject with 400."""


def _parse_bound(value: str, what: str, end: bool) -> tuple[int, date]:
    """A path bound as (ms, New York day); a date ``to`` covers the whole day."""
    if value.isdigit():
        ms = int(value)
        return ms, datetime.fromtimestamp(ms / 1000, NY).date()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"Could not parse the '{what}' parameter: use YYYY-MM-DD or a millisecond timestamp.") from None
    start = datetime.combine(day, datetime.min.time(), NY)
    ms = int(start.timestamp() * 1000)
    return (ms + 86_400_000 - 1 if end else ms), day


def _bool(value: str | None, default: bool) -> bool:
    return default if value is None else value.lower() not in ("false", "0", "no")


class Simulator:
    """The server's state: config, latency draws and counters. Thread-safe."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self.stats: Counter = Counter()

    def latency(self) -> float:
        lo, hi = self.config.latency_s
        with self._lock:
            return self._rng.uniform(lo, hi) * self.config.time_scale

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def authorized(self, headers, query: dict) -> bool:
        auth = headers.get("Authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else (query.get("apiKey") or [""])[0]
        return bool(key) and key == self.config.api_key

    def aggregates(self, host: str, m: re.Match, query: dict) -> dict:
        """The 200 body for one page, or raise :class:`BadRequest`."""
        ticker, span = m["ticker"], m["span"]
        if span not in TIMESPANS:
            raise BadRequest(f"Unknown timespan '{span}': use one of {', '.join(TIMESPANS)}.")
        if not m["mult"].isdigit() or int(m["mult"]) < 1:
            raise BadRequest("The multiplier must be a positive integer.")
        mult = int(m["mult"])
        if span not in BASE_MINUTES or (span in ("day", "week") and mult != 1):
            raise BadRequest(f"This simulator does not serve {mult}/{span} aggregates.")
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
        known = self.config.tickers is None or ticker in self.config.tickers
        if not known:
            return body
        bars = bars_between(self.config.seed, ticker, mult, span, frm_day, to_day)
        bars = bars.take((bars.t >= frm_ms) & (bars.t <= to_ms))
        if sort == "desc":
            bars = bars.take(slice(None, None, -1))
        per_page = max(1, limit // (BASE_MINUTES[span] * mult))
        page = bars.take(slice(0, per_page))
        body["queryCount"] = body["resultsCount"] = len(page)
        if len(page):
            body["results"] = _results(page)
        if len(bars) > per_page:
            nxt = int(bars.t[per_page])
            frm, to = (nxt, m["to"]) if sort == "asc" else (m["frm"], nxt)
            cursor = base64.urlsafe_b64encode(json.dumps({"adjusted": adjusted, "sort": sort, "limit": limit}).encode())
            body["next_url"] = (f"http://{host}/v2/aggs/ticker/{ticker}/range/{mult}/{span}/{frm}/{to}?"
                                + urlencode({"cursor": cursor.decode()}))
        self.count("bars_served", len(page))
        return body


def _results(page: BarArrays) -> list[dict]:
    cols = [page.v.tolist(), page.vw.tolist(), page.o.tolist(), page.c.tolist(), page.h.tolist(),
            page.l.tolist(), page.t.tolist(), page.n.astype(np.int64).tolist()]
    return [{"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": lo, "t": t, "n": n} for v, vw, o, c, h, lo, t, n in zip(*cols)]


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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "perflab-simulator"
    sim: Simulator

    def log_message(self, format, *args):  # noqa: A002 - keep request lines (and keys) out of stderr
        return

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.sim.count(f"status_{status}")
        self.sim.count("bytes_sent", len(data))

    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/_stats":
            self._send(200, dict(self.sim.stats))
            return
        self.sim.count("requests")
        rid = uuid.uuid4().hex
        m = AGGS_PATH.match(parts.path)
        if not m:
            self._send(404, {"status": "NOT_FOUND", "request_id": rid, "message": "Not found."})
            return
        if not self.sim.authorized(self.headers, query):
            self._send(401, {"status": "NOT_AUTHORIZED", "request_id": rid,
                             "message": "Unknown API Key. Please provide a valid API key."})
            return
        threading.Event().wait(self.sim.latency())
        try:
            body = self.sim.aggregates(self.headers.get("Host", "127.0.0.1"), m, _query_from_cursor(query))
        except BadRequest as exc:
            self._send(400, {"status": "ERROR", "request_id": rid, "error": str(exc)})
            return
        self._send(200, body)


def make_server(config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"sim": Simulator(config)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the first stdout line is ``perflab simulator listening on URL``."""
    parser = argparse.ArgumentParser(prog="perflab-simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
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
