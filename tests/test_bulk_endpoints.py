"""The bulk endpoints: grouped daily over a 10,000-ticker universe, and intraday timeframes derived from 1m bars.

Against a real simulator process: the grouped body has the official schema's shape and the numbers of the
per-ticker daily bars, weekends are empty, the cost model applies; derived 5m/15m/30m/1h bars equal the served
ones bar for bar, across both daylight-saving changes.
"""

from __future__ import annotations

import json
import random
import time
from datetime import date
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import requests

from perflab.api.client import PolygonClient
from perflab.errors import InputError
from perflab.pipeline.derive import derive_bars, derive_timeframes
from perflab.simulator import LOCAL_API_KEY, SimulatorConfig, start_simulator
from perflab.simulator.bars import minute_bars
from perflab.timeframes import NY, ny_midnight_ms, parse_timeframe

AUTH = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{date}"
OTC = ("ZQOTCF",)
UNIVERSE = 10_000
SPEC = Path(__file__).resolve().parents[2] / "shared" / "polygon" / "aggs_openapi.json"
# The 200 schema of GET /v2/aggs/grouped/locale/us/market/stocks/{date}, as the official OpenAPI document states
# it (polygon-io/client-python .massive/rest.json, the document shared/polygon/aggs_openapi.json was extracted
# from; that extract holds only the per-ticker range paths). Used when the shared file lacks the path.
OFFICIAL_GROUPED_200 = {"allOf": [
    {"type": "object", "required": ["status", "adjusted", "queryCount", "resultsCount", "request_id"],
     "properties": {"adjusted": {"type": "boolean"}, "queryCount": {"type": "integer"},
                    "request_id": {"type": "string"}, "resultsCount": {"type": "integer"},
                    "status": {"type": "string"}}},
    {"type": "object", "properties": {"results": {"type": "array", "items": {
        "type": "object", "required": ["o", "h", "l", "c", "t", "v", "T"],
        "properties": {"T": {"type": "string"}, "c": {"type": "number"}, "h": {"type": "number"},
                       "l": {"type": "number"}, "n": {"type": "integer"}, "o": {"type": "number"},
                       "otc": {"type": "boolean"}, "t": {"type": "integer"}, "v": {"type": "number"},
                       "vw": {"type": "number"}}}}}},
]}
DST_WEEKS = [(date(2024, 3, 7), date(2024, 3, 12)), (date(2024, 10, 31), date(2024, 11, 5))]
DERIVED = ("5m", "15m", "30m", "1h")


def _grouped_schema() -> dict:
    spec = json.loads(SPEC.read_text()) if SPEC.exists() else {}
    path = spec.get("paths", {}).get("/v2/aggs/grouped/locale/us/market/stocks/{date}")
    return path["get"]["responses"]["200"]["content"]["application/json"]["schema"] if path else OFFICIAL_GROUPED_200


@pytest.fixture(scope="module")
def market():
    """A simulator with a 10,000-ticker universe (the 29 named ones among them) and one OTC ticker."""
    with start_simulator(SimulatorConfig(time_scale=0.0005, universe_size=UNIVERSE, otc_tickers=OTC)) as s:
        yield s


def _raw(sim, day: str, **params) -> dict:
    resp = requests.get(sim.url + GROUPED.format(date=day), headers=AUTH, params=params, timeout=30)
    assert resp.status_code == 200, resp.text[:200]
    return resp.json()


def test_universe_is_ten_thousand_distinct_tickers_with_the_named_ones():
    config = SimulatorConfig(universe_size=UNIVERSE, otc_tickers=OTC)
    universe = config.universe
    assert len(universe) == len(set(universe)) == UNIVERSE and {"AAPL", "SPY"} <= set(universe)
    assert universe == SimulatorConfig(universe_size=UNIVERSE, otc_tickers=OTC).universe, "the same names every time"
    assert not set(OTC) & set(universe) and config.knows(OTC[0]) and config.knows(universe[-1])
    assert not config.knows("NOT-LISTED") and len(SimulatorConfig().universe) == 29


@pytest.mark.parametrize("day", ["2024-03-08", "2024-03-11", "2024-11-04"])
def test_grouped_daily_equals_per_ticker_daily_bars(market, day):
    client = PolygonClient(market.url)
    grouped = client.get_grouped_daily(day)
    assert grouped.stats.requests == 1
    frame = grouped.bars
    assert len(frame) == UNIVERSE and frame["symbol"].is_unique
    assert list(frame.columns) == ["symbol", "time", "open", "high", "low", "close", "volume", "vwap", "transactions"]
    sample = ["AAPL", "SPY", *random.Random(day).sample(list(frame["symbol"]), 25)]
    for symbol in sample:
        single = client.get_aggregates(symbol, 1, "day", day, day).bars
        row = frame[frame["symbol"] == symbol].drop(columns="symbol").reset_index(drop=True)
        pd.testing.assert_frame_equal(row, single, check_exact=True, obj=symbol)


def test_a_year_per_ticker_equals_the_grouped_rows_of_each_date(market):
    client = PolygonClient(market.url)
    days = pd.bdate_range("2024-03-04", "2024-03-15").date  # across the spring daylight-saving change
    grouped = pd.concat([client.get_grouped_daily(d).bars for d in days], ignore_index=True)
    for symbol in ("MSFT", *random.Random(7).sample(list(grouped["symbol"].unique()), 5)):
        single = client.get_aggregates(symbol, 1, "day", days[0], days[-1]).bars
        rows = grouped[grouped["symbol"] == symbol].drop(columns="symbol").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, single, check_exact=True, obj=symbol)


@pytest.mark.parametrize("day", ["2024-03-09", "2024-03-10", "2024-11-03"])
def test_weekend_dates_are_empty(market, day):
    body = _raw(market, day)
    assert body["status"] == "OK" and body["resultsCount"] == 0 and body["queryCount"] == 0
    assert "results" not in body
    frame = PolygonClient(market.url).get_grouped_daily(day).bars
    assert frame.empty and "symbol" in frame.columns


def test_grouped_body_matches_the_official_schema(market):
    body = _raw(market, "2024-03-11", adjusted="true")
    jsonschema.validate(body, _grouped_schema())
    assert body["resultsCount"] == body["queryCount"] == len(body["results"]) == UNIVERSE
    assert body["adjusted"] is True and "ticker" not in body and "next_url" not in body
    first = body["results"][0]
    assert set(first) == {"T", "o", "h", "l", "c", "v", "vw", "t", "n"}, "otc is left off when false"
    close = pd.Timestamp(first["t"], unit="ms", tz="UTC").tz_convert(NY)
    assert (close.date(), close.hour, close.minute) == (date(2024, 3, 11), 16, 0), "stamped at the window's end"
    assert _raw(market, "2024-03-11", adjusted="false")["adjusted"] is False


def test_otc_tickers_only_when_asked(market):
    without = _raw(market, "2024-03-11")
    assert OTC[0] not in {r["T"] for r in without["results"]}
    with_otc = _raw(market, "2024-03-11", include_otc="true")
    otc = [r for r in with_otc["results"] if r.get("otc")]
    assert [r["T"] for r in otc] == list(OTC) and with_otc["resultsCount"] == UNIVERSE + 1
    frame = PolygonClient(market.url).get_grouped_daily("2024-03-11", include_otc=True).bars
    assert OTC[0] in set(frame["symbol"])


def test_bad_date_is_400(market):
    resp = requests.get(market.url + GROUPED.format(date="11-03-2024"), headers=AUTH, timeout=10)
    assert resp.status_code == 400 and resp.json()["status"] == "ERROR"
    assert requests.get(market.url + GROUPED.format(date="2024-03-11"), timeout=10).status_code == 401


def test_grouped_request_pays_the_per_request_cost_model():
    """10,000 bars at 30 us a bar is 0.3 s of server time; a weekend date, with no bars, costs the base only."""
    config = SimulatorConfig(latency_s=(0.0, 0.0), per_bar_s=30e-6, transfer_bytes_per_s=None, time_scale=1.0,
                             universe_size=UNIVERSE)
    with start_simulator(config) as sim:
        took = {}
        for day in ("2024-03-09", "2024-03-11"):
            started = time.perf_counter()
            _raw(sim, day)
            took[day] = time.perf_counter() - started
        assert took["2024-03-11"] >= 0.3 > took["2024-03-09"] + 0.1
        assert sim.stats()["bars_served"] == UNIVERSE
        requests.post(sim.url + "/_faults", json={"server_error_rate": 1.0}, timeout=5)
        assert requests.get(sim.url + GROUPED.format(date="2024-03-11"), headers=AUTH, timeout=10).status_code >= 500


@pytest.mark.parametrize("week", DST_WEEKS, ids=["spring-forward", "fall-back"])
@pytest.mark.parametrize("symbol", ["AAPL", "KO", "generated"])
def test_derived_timeframes_equal_the_served_bars(market, week, symbol):
    first, last = week
    symbol = market.config.universe[1234] if symbol == "generated" else symbol
    client = PolygonClient(market.url)
    minutes = client.get_aggregates(symbol, 1, "minute", first, last, limit=50_000).bars
    assert len(minutes) > 3000
    derived = derive_timeframes(minutes, ("1m", *DERIVED))
    pd.testing.assert_frame_equal(derived["1m"], minutes)
    for name in DERIVED:
        tf = parse_timeframe(name)
        served = client.get_aggregates(symbol, tf.multiplier, tf.timespan, first, last, limit=50_000).bars
        got = derived[name]
        exact = ["time", "open", "high", "low", "close", "volume", "transactions"]
        pd.testing.assert_frame_equal(got[exact], served[exact], check_exact=True, obj=f"{symbol} {name}")
        np.testing.assert_allclose(got["vwap"], served["vwap"], rtol=1e-9, atol=0)
        local = got["time"].dt.tz_convert(NY)
        width = tf.multiplier * (60 if tf.timespan == "hour" else 1)
        assert ((local.dt.hour * 60 + local.dt.minute) % width == 0).all(), "windows start on New York time"
    hours = derived["1h"]["time"].dt.tz_convert(NY)
    assert (hours.dt.minute == 0).all() and hours.dt.hour.min() == 4 and hours.dt.hour.max() == 19


def test_daily_bars_are_fetched_not_derived(market):
    with pytest.raises(InputError, match="cannot be derived"):
        derive_bars(PolygonClient(market.url).get_aggregates("AAPL", 1, "minute", "2024-03-11", "2024-03-11").bars,
                    "1d")
    day = date(2024, 3, 11)
    served = PolygonClient(market.url).get_aggregates("AAPL", 1, "day", day, day).bars.iloc[0]
    minutes = minute_bars(market.config.seed, "AAPL", day)
    assert served["volume"] != minutes.v.sum(), "Polygon's daily bar is not the fold of its minute bars"
    assert served["time"].value // 1_000_000 == ny_midnight_ms(day)


def test_derive_handles_an_empty_frame_and_unsorted_minutes(market):
    minutes = PolygonClient(market.url).get_aggregates("MSFT", 1, "minute", "2024-03-11", "2024-03-12",
                                                       limit=50_000).bars
    shuffled = minutes.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(derive_bars(shuffled, "15m"), derive_bars(minutes, "15m"))
    assert derive_bars(minutes.iloc[:0], "5m").empty
    assert len(derive_bars(minutes, "1h")) == 2 * 16  # 04:00-20:00 New York, two days
