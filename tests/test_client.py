import json
import logging
from datetime import date

import pandas as pd
import pytest

from perflab.api import errors
from perflab.api.client import PolygonClient, bars_frame
from perflab.api.transport import Transport
from perflab.errors import ConfigError
from perflab.measure.results import RequestStats
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.bars import bars_between

SENTINEL = "sk-SENTINEL-7f3a9c2e"


def test_fetch_follows_pages_and_matches_simulator(sim):
    client = PolygonClient(sim.url)
    res = client.get_aggregates("AAPL", 1, "minute", "2024-03-04", "2024-03-06", limit=500)
    expected = bars_between(sim.config.seed, "AAPL", 1, "minute", date(2024, 3, 4), date(2024, 3, 6))
    assert res.stats.requests > 3
    assert len(res.bars) == len(expected)
    assert (res.bars["time"].dt.as_unit("ms").astype("int64").to_numpy() == expected.t).all()
    assert res.bars["time"].is_monotonic_increasing and not res.bars["time"].duplicated().any()


def test_a_callers_stats_are_added_to_as_pages_come(sim):
    spent = RequestStats(requests=7, latencies=[9.0])  # what the caller's job already cost
    res = PolygonClient(sim.url).get_aggregates("AAPL", 1, "minute", "2024-03-04", "2024-03-06", limit=500,
                                                stats=spent)
    pages = spent.requests - 7
    assert res.stats is spent and pages > 3
    assert spent.latencies[0] == 9.0 and len(spent.latencies) == pages + 1 and spent.bytes_received > 0


def test_the_transport_sends_one_request_and_types_what_went_wrong(sim):
    transport = Transport(sim.url, sim.config.api_key)
    stats = RequestStats()
    reply = transport.get(f"{sim.url}/v2/aggs/ticker/AAPL/range/1/minute/2024-03-04/2024-03-06", {"limit": 50}, stats)
    body = json.loads(reply.body)
    assert reply.status == 200 and len(body["results"]) == 50 and body["next_url"]  # one page: the client pages
    assert stats.requests == 1 and stats.bytes_received == len(reply.body) and len(stats.latencies) == 1
    with pytest.raises(errors.NotFoundError):
        transport.get(f"{sim.url}/v2/no/such/endpoint", None, stats)
    with pytest.raises(errors.ConnectionError, match="cannot reach the API at http://127.0.0.1:1: connection refused"):
        Transport("http://127.0.0.1:1", "key").get("http://127.0.0.1:1/v2/aggs", None, stats)
    assert stats.requests == 3 and len(stats.latencies) == 3
    transport.close()


def test_unknown_ticker_is_empty(sim):
    res = PolygonClient(sim.url).get_aggregates("NOPE", 1, "day", "2024-03-04", "2024-03-08")
    assert res.bars.empty and res.stats.requests == 1


def test_bad_request_is_typed_with_status_and_body(sim):
    with pytest.raises(errors.BadRequestError) as info:
        PolygonClient(sim.url).get_aggregates("AAPL", 1, "day", "2024-03-08", "2024-03-04")
    assert info.value.status == 400 and "ERROR" in info.value.body


def test_missing_key_for_remote_url_is_a_config_error(monkeypatch):
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="POLYGON_API_KEY"):
        PolygonClient("https://api.polygon.io")


def test_api_key_never_leaks(caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with start_simulator(SimulatorConfig(time_scale=0.0005, api_key=SENTINEL)) as s:
        client = PolygonClient(s.url, api_key=SENTINEL)
        res = client.get_aggregates("AAPL", 5, "minute", "2024-03-04", "2024-03-05", limit=300)
        assert res.stats.requests > 1
        wrong = PolygonClient(s.url, api_key=SENTINEL + "-wrong")
        with pytest.raises(errors.AuthError) as info:
            wrong.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-05")
    assert info.value.status == 401
    text = caplog.text + capsys.readouterr().err + str(info.value) + repr(info.value) + (info.value.body or "")
    assert SENTINEL not in text
    assert SENTINEL not in repr(client)


def test_bars_frame_is_the_same_whether_pages_come_sorted_or_not():
    rows = [{"t": 1709560800000 + i * 60000, "o": 1.0 + i, "h": 2.0 + i, "l": 0.5, "c": 1.5, "v": 10.0 * i,
             **({"vw": 1.25} if i % 3 else {}), **({"n": i} if i % 4 else {"n": None})} for i in range(40)]
    shuffled = list(reversed(rows)) + rows[5:9]  # unsorted, with duplicates: the pandas path
    fast, slow = bars_frame(rows), bars_frame(shuffled)
    assert fast["time"].is_monotonic_increasing and len(fast) == 40
    assert fast["vwap"].isna().sum() == 14 and (fast["transactions"] == 0).sum() == 10
    pd.testing.assert_frame_equal(fast, slow)


def test_pages_are_parsed_a_few_at_a_time_whatever_is_in_flight(sim, monkeypatch):
    """64 fetches at once: never more pages held parsed (a dict per bar) than there are parse slots."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from perflab.api import client as client_module

    slots = threading.BoundedSemaphore(2)
    held, peak, lock = [0], [0], threading.Lock()
    parse = client_module._aggregates_body

    def counting(reply):
        with lock:
            held[0] += 1
            peak[0] = max(peak[0], held[0])
        try:
            time.sleep(0.02)  # a big page's parse: long enough that answers pile up behind the slots
            return parse(reply)
        finally:
            with lock:
                held[0] -= 1

    monkeypatch.setattr(client_module, "PARSE_SLOTS", slots)
    monkeypatch.setattr(client_module, "_aggregates_body", counting)
    client = PolygonClient(sim.url)
    with ThreadPoolExecutor(64) as pool:
        frames = list(pool.map(lambda i: client.get_aggregates("AAPL", 5, "minute", "2024-03-04", "2024-03-05",
                                                               limit=100).bars, range(64)))
    assert peak[0] == 2 and all(f.equals(frames[0]) for f in frames) and len(frames[0]) > 100  # several pages each
