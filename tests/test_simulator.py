import json
from datetime import date
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests

from perflab.errors import InputError
from perflab.simulator import LOCAL_API_KEY, SimulatorConfig
from perflab.simulator.bars import bars_between, daily_bars, minute_bars, ticker_daily_bars

SPEC = Path(__file__).resolve().parents[2] / "shared" / "polygon" / "aggs_openapi.json"
AUTH = {"Authorization": f"Bearer {LOCAL_API_KEY}"}


def _schema():
    if not SPEC.exists():
        pytest.skip("shared/polygon/aggs_openapi.json not beside the checkout")
    spec = json.loads(SPEC.read_text())
    path = "/v2/aggs/ticker/{stocksTicker}/range/{multiplier}/{timespan}/{from}/{to}"
    return spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def get(sim, path, **kw):
    return requests.get(sim.url + path, headers=kw.pop("headers", AUTH), timeout=10, **kw)


def test_body_validates_against_official_schema(sim):
    body = get(sim, "/v2/aggs/ticker/AAPL/range/5/minute/2024-03-04/2024-03-05").json()
    jsonschema.validate(body, _schema())
    assert body["status"] == "OK" and body["resultsCount"] == len(body["results"]) > 0


def test_bars_are_deterministic_and_consistent_across_timespans():
    day = date(2024, 3, 4)
    a, b = minute_bars(7, "MSFT", day), minute_bars(7, "MSFT", day)
    assert (a.c == b.c).all() and len(a) > 0
    hourly = bars_between(7, "MSFT", 1, "hour", day, day)
    assert hourly.v.sum() == a.v.sum()
    assert hourly.h.max() == a.h.max() and hourly.l.min() == a.l.min()
    assert len(minute_bars(7, "MSFT", date(2024, 3, 9))) == 0  # a Saturday


def test_minute_bars_stay_in_extended_session(sim):
    body = get(sim, "/v2/aggs/ticker/AAPL/range/1/minute/2024-03-04/2024-03-04").json()
    hours = {(r["t"] // 3_600_000 - 9) % 24 for r in body["results"]}  # EST = UTC-5 in early March
    assert min(hours) >= 0 and max(hours) < 16  # 04:00..19:59 New York


def test_pagination_covers_every_bar_once(sim):
    full = get(sim, "/v2/aggs/ticker/AAPL/range/1/minute/2024-03-04/2024-03-06", params={"limit": 50000}).json()
    seen, url, pages = [], sim.url + "/v2/aggs/ticker/AAPL/range/1/minute/2024-03-04/2024-03-06?limit=700", 0
    while url:
        assert "apiKey" not in url and LOCAL_API_KEY not in url
        body = requests.get(url, headers=AUTH, timeout=10).json()
        seen += [r["t"] for r in body.get("results", [])]
        url, pages = body.get("next_url"), pages + 1
    assert pages > 3
    assert seen == [r["t"] for r in full["results"]]


def test_unknown_ticker_is_empty_200(sim):
    resp = get(sim, "/v2/aggs/ticker/NOPE/range/1/day/2024-03-04/2024-03-08")
    assert resp.status_code == 200
    body = resp.json()
    assert body["resultsCount"] == 0 and "results" not in body


@pytest.mark.parametrize("headers, params", [({}, {}), ({"Authorization": "Bearer wrong"}, {}),
                                             ({}, {"apiKey": "wrong"})])
def test_bad_key_is_401_not_authorized(sim, headers, params):
    resp = get(sim, "/v2/aggs/ticker/AAPL/range/1/day/2024-03-04/2024-03-08", headers=headers, params=params)
    assert resp.status_code == 401 and resp.json()["status"] == "NOT_AUTHORIZED"


def test_api_key_query_param_accepted(sim):
    resp = get(sim, "/v2/aggs/ticker/AAPL/range/1/day/2024-03-04/2024-03-08", headers={},
               params={"apiKey": LOCAL_API_KEY})
    assert resp.status_code == 200


@pytest.mark.parametrize("path", ["/v2/aggs/ticker/AAPL/range/1/day/2024-03-08/2024-03-04",
                                  "/v2/aggs/ticker/AAPL/range/1/fortnight/2024-03-04/2024-03-08",
                                  "/v2/aggs/ticker/AAPL/range/1/day/yesterday/2024-03-08"])
def test_bad_parameters_are_400_error_body(sim, path):
    resp = get(sim, path)
    assert resp.status_code == 400
    body = resp.json()
    assert body["status"] == "ERROR" and body["error"] and body["request_id"]


def test_stats_count_requests(sim):
    before = requests.get(sim.url + "/_stats", timeout=5).json().get("requests", 0)
    get(sim, "/v2/aggs/ticker/AAPL/range/1/day/2024-03-04/2024-03-08")
    assert sim.stats()["requests"] == before + 1


def test_daily_bars_are_one_model_for_a_whole_date_and_for_one_ticker():
    universe = SimulatorConfig(universe_size=3000).universe
    day = date(2024, 3, 11)
    market = daily_bars(42, universe, day)
    assert len(market) == 3000 and len(daily_bars(42, universe, date(2024, 3, 10))) == 0  # a Sunday
    for i in (0, 1234, 2999):
        one = ticker_daily_bars(42, universe[i], date(2024, 3, 8), date(2024, 3, 12))  # Fri, Mon, Tue
        assert len(one) == 3
        assert all(getattr(one, f)[1] == getattr(market, f)[i] for f in ("t", "o", "h", "l", "c", "v", "vw", "n"))
    assert (market.h >= np.maximum(market.o, market.c)).all() and (market.l <= np.minimum(market.o, market.c)).all()
    assert ((market.l <= market.vw) & (market.vw <= market.h)).all() and (market.n > 0).all() and (market.v > 0).all()
    assert not np.array_equal(daily_bars(43, universe, day).c, market.c), "the seed changes the bars"
    assert len(np.unique(market.c)) > 2900, "tickers differ"


def test_folded_bars_keep_the_volume_weighted_vwap_unrounded():
    day = date(2024, 3, 4)
    minutes = minute_bars(7, "MSFT", day)
    five = bars_between(7, "MSFT", 5, "minute", day, day)
    first = minutes.t < five.t[0] + 300_000
    assert five.vw[0] == pytest.approx((minutes.vw[first] * minutes.v[first]).sum() / minutes.v[first].sum(), rel=1e-12)
    assert (np.round(five.vw, 4) != five.vw).any(), "a fold's vwap is not rounded to 4 decimals"
    one = bars_between(7, "MSFT", 1, "minute", day, day)
    assert np.array_equal(one.vw, minutes.vw) and np.array_equal(one.t, minutes.t), "1m bars are the minutes"


def test_universe_config_round_trips_and_is_checked():
    config = SimulatorConfig(universe_size=500, otc_tickers=("ZQOTCF",))
    assert SimulatorConfig.from_json(config.to_json()) == config
    assert SimulatorConfig.from_json(config.to_json()).universe == config.universe
    with pytest.raises(InputError, match="universe_size"):
        SimulatorConfig(universe_size=-1)
