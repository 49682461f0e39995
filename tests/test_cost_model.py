"""The simulator's cost model (latency grows with the page), gzip on the wire, and honest time compression."""

import gzip
import json
import random
import statistics
import time
from dataclasses import replace
from datetime import date

import pytest
import requests

from perflab.api.client import PolygonClient
from perflab.errors import InputError
from perflab.measure.results import RunSet
from perflab.pipeline.fixes import FixSet
from perflab.pipeline.presets import PRESETS, get_preset
from perflab.pipeline.scheduler import Workload, run_backfill
from perflab.report.index import verdict_section
from perflab.simulator import LOCAL_API_KEY, SimulatorConfig, start_simulator
from perflab.simulator.server import Simulator, accepts_gzip

AUTH = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
MONTH = "2024-03-04/2024-03-29"
MANY = f"/v2/aggs/ticker/AAPL/range/1/minute/{MONTH}?limit=50000"  # one page of 16,637 bars
FEW = f"/v2/aggs/ticker/AAPL/range/1/day/{MONTH}"  # one page of 20 bars


# --- the model, deterministic ---

def test_cost_grows_with_bars_and_wire_bytes_on_top_of_the_seeded_base():
    config = SimulatorConfig(latency_s=(0.5, 0.8), per_bar_s=30e-6, transfer_bytes_per_s=2e6)
    assert config.request_cost_s(0.0) == pytest.approx(0.5)
    assert config.request_cost_s(0.5) == pytest.approx(0.65)
    assert config.request_cost_s(0.5, bars=50_000) - config.request_cost_s(0.5, bars=500) == pytest.approx(1.485)
    assert config.request_cost_s(0.5, bars=1000, wire_bytes=2_000_000) == pytest.approx(0.65 + 0.03 + 1.0)
    assert replace(config, transfer_bytes_per_s=None).page_cost_s(0, 10**9) == 0.0
    assert config.full_scale_s(4, 16_637, 525_000) == pytest.approx(4 * 0.65 + 16_637 * 30e-6 + 0.2625)


def test_big_pages_cut_round_trips_but_a_big_page_costs_more():
    config = SimulatorConfig()
    bars, gzip_bytes_per_bar = 16_637, 31.5  # a month of 1m bars, as the simulator serves them (docs/simulator.md)
    small_pages = config.full_scale_s(4, bars, int(bars * gzip_bytes_per_bar))  # limit=5000: 4 pages
    one_big_page = config.full_scale_s(1, bars, int(bars * gzip_bytes_per_bar))  # limit=50000: 1 page
    assert 2.0 <= small_pages <= 4.0  # the plan's 2-4 s per symbol/timeframe
    assert one_big_page < small_pages and small_pages / one_big_page < 4  # fewer round trips, not a free 4x
    assert config.request_cost_s(0.5, 50_000, 50_000 * 31) > 3 * config.request_cost_s(0.5, 5_000, 5_000 * 31)


def test_base_draws_are_seeded():
    a, b = Simulator(SimulatorConfig(seed=9)), Simulator(SimulatorConfig(seed=9))
    draws = [a.draw_latency() for _ in range(5)]
    assert draws == [b.draw_latency() for _ in range(5)]
    rng = random.Random(9)
    assert draws == [rng.random() for _ in range(5)]
    assert draws != [Simulator(SimulatorConfig(seed=10)).draw_latency() for _ in range(5)]


@pytest.mark.parametrize("changes", [{"latency_s": (0.8, 0.5)}, {"latency_s": (-1.0, 1.0)}, {"per_bar_s": -1e-6},
                                     {"transfer_bytes_per_s": 0}, {"time_scale": -1}])
def test_impossible_cost_parameters_are_refused(changes):
    with pytest.raises(InputError, match="simulator"):
        SimulatorConfig(**changes)


def test_config_round_trips_through_json_with_the_cost_model():
    config = SimulatorConfig(latency_s=(0.1, 0.2), per_bar_s=1e-5, transfer_bytes_per_s=None, time_scale=0.5)
    assert SimulatorConfig.from_json(config.to_json()) == config


# --- the model, on the real server ---

def _median_seconds(url: str, n: int = 5) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = requests.get(url, headers=AUTH, timeout=30)
        samples.append(time.perf_counter() - t0)
        assert resp.status_code == 200
    return statistics.median(samples)


def test_a_page_of_many_bars_takes_longer_than_a_page_of_few():
    config = SimulatorConfig(latency_s=(0.4, 0.4), time_scale=0.1)
    with start_simulator(config) as sim:
        requests.get(sim.url + MANY, headers=AUTH, timeout=30)  # builds the month's bars once (the server caches them)
        many = requests.get(sim.url + MANY, headers=AUTH, timeout=30)
        extra_s = config.page_cost_s(many.json()["resultsCount"], int(many.headers["Content-Length"])) * 0.1
        few_s, many_s = _median_seconds(sim.url + FEW), _median_seconds(sim.url + MANY)
    assert extra_s > 0.06  # 16,637 bars: ~0.5 s of server time and ~0.26 s of transfer, at a tenth
    assert few_s >= 0.04 * 0.95  # the base, scaled
    assert many_s - few_s > 0.6 * extra_s, (few_s, many_s, extra_s)
    assert many_s - few_s < extra_s + 0.25, (few_s, many_s, extra_s)


# --- gzip ---

@pytest.mark.parametrize("header, gzip_ok", [("gzip, deflate", True), ("deflate, gzip;q=0.5", True), ("x-gzip", True),
                                             ("*", True), ("identity", False), ("gzip;q=0", False), ("", False),
                                             (None, False), ("br", False)])
def test_accept_encoding_parsing(header, gzip_ok):
    assert accepts_gzip(header) is gzip_ok


def _raw(sim, path: str, accept: str | None) -> requests.Response:
    resp = requests.get(sim.url + path, headers={**AUTH, "Accept-Encoding": accept}, timeout=10, stream=True)
    resp.raw_bytes = resp.raw.read(decode_content=False)
    return resp


def _same_body(a: bytes, b: bytes) -> bool:
    """Two aggregates bodies equal but for their request ids (unique per answer)."""
    x, y = json.loads(a), json.loads(b)
    return x.pop("request_id") != y.pop("request_id") and x == y


def test_gzip_is_served_when_asked_and_decodes_to_the_identity_body(sim):
    path = "/v2/aggs/ticker/AAPL/range/5/minute/2024-03-04/2024-03-05"
    before = sim.stats()
    zipped = _raw(sim, path, "gzip, deflate")
    plain = _raw(sim, path, "identity")
    after = sim.stats()
    absent = _raw(sim, path, None)  # requests drops a header set to None (http.client then says identity)
    refused = _raw(sim, path, "gzip;q=0")
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.raw_bytes[:2] == b"\x1f\x8b"
    assert int(zipped.headers["Content-Length"]) == len(zipped.raw_bytes)
    for resp in (plain, absent, refused):
        assert "Content-Encoding" not in resp.headers and resp.raw_bytes.startswith(b"{")
    assert _same_body(gzip.decompress(zipped.raw_bytes), plain.raw_bytes)
    assert len(zipped.raw_bytes) * 3 < len(plain.raw_bytes)  # JSON bars compress well: the wire carries far less
    assert after["bytes_sent"] - before.get("bytes_sent", 0) == len(zipped.raw_bytes) + len(plain.raw_bytes)
    assert after["bytes_decoded"] - before.get("bytes_decoded", 0) == 2 * len(plain.raw_bytes)  # ids: same length


def test_client_decodes_gzip_and_counts_decoded_bytes(sim):
    client = PolygonClient(sim.url)
    before = sim.stats()
    result = client.get_aggregates("AAPL", 1, "minute", "2024-03-04", "2024-03-06", limit=700)
    after = sim.stats()
    client.close()
    assert result.stats.requests > 3 and len(result.bars) == after["bars_served"] - before["bars_served"]
    wire = after["bytes_sent"] - before["bytes_sent"]
    assert result.stats.bytes_received == after["bytes_decoded"] - before["bytes_decoded"] > 3 * wire


# --- honest compression ---

def test_compression_note_says_what_each_preset_compresses():
    smoke, standard, plan = (PRESETS[n].compression_note for n in ("smoke", "standard", "plan"))
    assert "API latency compressed 200x (0.5-0.8 s -> 2.5-4 ms per request" in smoke
    assert "API latency compressed 400x (0.5-0.8 s -> 1.25-2 ms per request" in standard
    for note in (smoke, standard):
        assert "database and compute run at full cost" in note and "not the plan's" in note
    assert "rate limit (100 requests/s) is in wall seconds, not compressed" in standard
    assert "rate limit" not in smoke
    assert plan.startswith("Nothing compressed: API latency at full scale (0.5-0.8 s per request + 30 µs per bar")
    assert "compressed 100x (0.5-0.8 s -> 5-8 ms" in get_preset("plan").with_overrides(time_scale=0.01).compression_note
    assert {n: p.compresses_latency for n, p in PRESETS.items()} == {
        "smoke": True, "standard": True, "plan": False, "large": True, "large_month": True}


def test_full_scale_estimate_adds_back_what_time_scale_took_away():
    standard = get_preset("standard")  # time_scale 1/400, base 0.65 s mean
    est = standard.full_scale_api({"api": 1.0, "db": 9.0, "compute": 0.0}, requests=125, bars=0, wire_bytes=0)
    assert est.api_s == pytest.approx(1.0 + 125 * 0.65 * (1 - 0.0025))
    assert est.share == pytest.approx(est.api_s / (est.api_s + 9.0)) and est.share > 0.85
    assert est.mean_latency_s == pytest.approx(0.65) and sum(est.shares.values()) == pytest.approx(1.0)
    with_bars = standard.full_scale_api({"api": 1.0, "db": 9.0}, requests=125, bars=10_000, wire_bytes=2_000_000)
    assert with_bars.api_s == pytest.approx(est.api_s + (0.3 + 1.0) * (1 - 0.0025))
    plan = get_preset("plan").full_scale_api({"api": 1.0, "db": 9.0}, requests=125, bars=0, wire_bytes=0)
    assert plan.api_s == pytest.approx(1.0) and plan.share == pytest.approx(0.1)  # nothing was compressed


@pytest.fixture(scope="module")
def standard_baseline(tmp_path_factory, engine):
    """A real baseline run under the standard preset's simulator (few jobs), saved as a report would save it."""
    from perflab.db.migrate import reset_data

    reset_data(engine)
    preset = get_preset("standard")
    workload = Workload(("AAPL", "MSFT"), ("5m", "1h"), date(2024, 3, 4), date(2024, 3, 4))
    with start_simulator(preset.simulator_config()) as sim:
        before = sim.stats()
        client = PolygonClient(sim.url)
        run = run_backfill(workload, client, engine, FixSet.parse("none"), params={"preset": "standard"},
                           time_scale=preset.time_scale)
        client.close()
        after = sim.stats()
    run.server_stats = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return run, tmp_path_factory.mktemp("report")


def test_index_shows_the_compression_note_and_the_full_scale_estimate(standard_baseline):
    run, out = standard_baseline
    RunSet("baseline", [run]).save(out / "baseline.json")
    page = verdict_section(out)
    assert "Preset standard: API latency compressed 400x" in page
    assert "Bottleneck: Path A" not in page  # 4 requests at 1.25-2 ms each: the database dominates when compressed
    assert "<b>This answer depends on the compression.</b> With latency at full scale the API share would be ~" in page
    assert "an estimate: 4 requests x 0.6" in page and "which the plan's rules would call Path A" in page


def test_index_of_an_uncompressed_preset_says_nothing_was_compressed(standard_baseline):
    run, out = standard_baseline
    plan_run = replace(run, params={**run.params, "preset": "plan"})
    RunSet("baseline", [plan_run]).save(out / "baseline.json")
    page = verdict_section(out)
    assert "Preset plan: Nothing compressed" in page and "estimate" not in page
