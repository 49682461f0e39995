import json
from datetime import date
from pathlib import Path

import jsonschema
import pytest
import requests

from perflab.simulator import LOCAL_API_KEY
from perflab.simulator.bars import bars_between, minute_bars

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
