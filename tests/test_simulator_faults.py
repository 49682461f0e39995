"""The simulator's rate limit, fault injection, runtime fault control and counters."""

import time
from datetime import date

import pytest
import requests

from perflab.errors import InputError
from perflab.simulator import LOCAL_API_KEY, SimulatorConfig, start_simulator
from perflab.simulator.bars import calendar_bars, ny_midnight_ms
from perflab.simulator.faults import validate_faults

AUTH = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
DAY = "/v2/aggs/ticker/AAPL/range/1/day/2024-03-04/2024-03-08"


@pytest.fixture(scope="module")
def fsim():
    with start_simulator(SimulatorConfig(time_scale=0.0005, seed=3)) as s:
        yield s


def set_faults(sim, faults):
    resp = requests.post(sim.url + "/_faults", json=faults, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["faults"]


def test_rate_limit_answers_429_with_polygon_body_and_retry_after():
    with start_simulator(SimulatorConfig(time_scale=0.0005, rate_limit_per_s=5, rate_limit_burst=2)) as s:
        codes = [requests.get(s.url + DAY, headers=AUTH, timeout=5) for _ in range(4)]
        stats = s.stats()
    assert [r.status_code for r in codes[:2]] == [200, 200]
    limited = codes[2]
    assert limited.status_code == 429
    assert limited.json()["status"] == "ERROR" and "exceeded" in limited.json()["error"]
    assert 0 < float(limited.headers["Retry-After"]) <= 0.2
    assert stats["status_429"] >= 1 and stats["rate_limited"] == stats["status_429"]


@pytest.mark.parametrize("faults, status", [({"server_error_rate": 1}, {500, 502, 503}),
                                            ({"burst_429_rate": 1}, {429}),
                                            ({"gateway_timeout_rate": 1, "gateway_timeout_s": 0.01}, {504})])
def test_error_faults_answer_their_status_and_are_counted(fsim, faults, status):
    set_faults(fsim, faults)
    before = fsim.stats()
    resp = requests.get(fsim.url + DAY, headers=AUTH, timeout=5)
    set_faults(fsim, {})
    assert resp.status_code in status and resp.json()["status"] == "ERROR"
    kind = next(iter(faults)).removesuffix("_rate")
    assert fsim.stats()[f"fault_{kind}"] == before.get(f"fault_{kind}", 0) + 1


def test_reset_closes_without_answer(fsim):
    set_faults(fsim, {"reset_rate": 1})
    with pytest.raises(requests.ConnectionError):
        requests.get(fsim.url + DAY, headers=AUTH, timeout=5)
    set_faults(fsim, {})


def test_body_faults(fsim):
    clean = requests.get(fsim.url + DAY, headers=AUTH, timeout=5).json()
    set_faults(fsim, {"malformed_rate": 1})
    truncated = requests.get(fsim.url + DAY, headers=AUTH, timeout=5)
    set_faults(fsim, {"null_results_rate": 1})
    null = requests.get(fsim.url + DAY, headers=AUTH, timeout=5).json()
    set_faults(fsim, {"duplicate_rate": 1})
    dup = requests.get(fsim.url + DAY, headers=AUTH, timeout=5).json()
    set_faults(fsim, {"slow_body_rate": 1, "slow_body_s": 0.3})
    t0 = time.perf_counter()
    slow = requests.get(fsim.url + DAY, headers=AUTH, timeout=5).json()
    slow_s = time.perf_counter() - t0
    set_faults(fsim, {})
    assert truncated.status_code == 200
    with pytest.raises(ValueError):
        truncated.json()
    assert null["results"] is None and null["resultsCount"] == clean["resultsCount"] > 0
    ts = [r["t"] for r in dup["results"]]
    assert len(ts) > len(set(ts)) and set(ts) == {r["t"] for r in clean["results"]}
    assert slow == clean | {"request_id": slow["request_id"]} and slow_s >= 0.25


def test_outage_window_in_seconds_since_start(fsim):
    uptime = fsim.stats()["uptime_s"]
    set_faults(fsim, {"outage": {"after_s": uptime, "duration_s": 0.3}})
    down = requests.get(fsim.url + DAY, headers=AUTH, timeout=5).status_code
    time.sleep(0.35)
    up = requests.get(fsim.url + DAY, headers=AUTH, timeout=5).status_code
    set_faults(fsim, {})
    assert (down, up) == (503, 200)


def test_faults_endpoint_rejects_unknown_keys_and_reports_current(fsim):
    resp = requests.post(fsim.url + "/_faults", json={"explode_rate": 1}, timeout=5)
    assert resp.status_code == 400 and "explode_rate" in resp.json()["error"]
    assert set_faults(fsim, {"server_error_rate": 0.25}) == {"server_error_rate": 0.25}
    assert requests.get(fsim.url + "/_faults", timeout=5).json()["faults"] == {"server_error_rate": 0.25}
    set_faults(fsim, {})


def test_faults_validation():
    with pytest.raises(InputError):
        validate_faults({"reset_rate": 2})
    with pytest.raises(InputError):
        validate_faults({"outage": {"after_s": 1}})
    assert validate_faults({"slow_body_rate": 0.5, "slow_body_s": 2}) == {"slow_body_rate": 0.5, "slow_body_s": 2}


def test_config_faults_apply_from_start_and_stay_json_serialisable():
    config = SimulatorConfig(time_scale=0.0005, faults={"server_error_rate": 1.0})
    assert SimulatorConfig.from_json(config.to_json()) == config
    with start_simulator(config) as s:
        assert requests.get(s.url + DAY, headers=AUTH, timeout=5).status_code >= 500


def test_calendar_timespans_fold_daily_bars(fsim):
    start, end = ny_midnight_ms(date(2024, 1, 1)), ny_midnight_ms(date(2024, 6, 30))
    months = calendar_bars(3, "AAPL", 1, "month", start, end)
    quarters = calendar_bars(3, "AAPL", 1, "quarter", start, end)
    assert len(months) == 6 and len(quarters) == 2
    assert months.v[:3].sum() == quarters.v[0] and months.h[:3].max() == quarters.h[0]
    weeks = requests.get(fsim.url + "/v2/aggs/ticker/AAPL/range/1/week/2024-03-03/2024-03-16", headers=AUTH,
                         timeout=5).json()["results"]
    assert [w["t"] for w in weeks] == [ny_midnight_ms(date(2024, 3, 3)), ny_midnight_ms(date(2024, 3, 10))]


@pytest.mark.parametrize("span", ["week", "month", "year"])
def test_calendar_pagination_asc_and_desc_cover_every_bar_once(fsim, span):
    path = f"/v2/aggs/ticker/AAPL/range/1/{span}/2023-01-01/2024-03-29"
    full = requests.get(fsim.url + path, headers=AUTH, params={"limit": 50000}, timeout=10).json()["results"]
    for sort in ("asc", "desc"):
        url, seen = fsim.url + path + f"?limit={BASE[span] * 2}&sort={sort}", []
        while url:
            body = requests.get(url, headers=AUTH, timeout=10).json()
            seen += body.get("results", [])
            url = body.get("next_url")
        assert seen == (full if sort == "asc" else full[::-1])


BASE = {"week": 5, "month": 21, "year": 126}  # year: 2 x 126 base bars = one bar a page
