"""The client against a faulty, rate-limited simulator: typed errors, retries, recovery, no lost or doubled bars."""

import logging
from datetime import date

import pytest
import requests

from perflab.api import errors
from perflab.api.client import PolygonClient, RetryPolicy
from perflab.api.ratelimit import AdaptivePacer
from perflab.measure.results import RequestStats
from perflab.pipeline.fixes import FixSet, client_for
from perflab.simulator import SimulatorConfig, start_simulator
from perflab.simulator.bars import bars_between

SENTINEL = "sk-SENTINEL-RESILIENCE-91b2"
FAST = RetryPolicy(attempts=8, initial_s=0.001, max_s=0.02, jitter_s=0.001)


@pytest.fixture(scope="module")
def fsim():
    with start_simulator(SimulatorConfig(time_scale=0.0005, seed=5, api_key=SENTINEL)) as s:
        yield s


@pytest.fixture
def faults(fsim):
    def set_(f):
        requests.post(fsim.url + "/_faults", json=f, timeout=5).raise_for_status()
    yield set_
    set_({})


def expected_t(seed, mult, span, start, end):
    return bars_between(seed, "AAPL", mult, span, start, end).t


def times(frame):
    return frame["time"].dt.as_unit("ms").astype("int64").to_numpy()


def test_every_fault_is_recovered_with_every_bar_once(fsim, faults, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    faults({"server_error_rate": 0.1, "gateway_timeout_rate": 0.05, "gateway_timeout_s": 0.01, "reset_rate": 0.05,
            "malformed_rate": 0.1, "null_results_rate": 0.1, "duplicate_rate": 0.3, "burst_429_rate": 0.1})
    client = PolygonClient(fsim.url, api_key=SENTINEL, retry=FAST)
    res = client.get_aggregates("AAPL", 1, "minute", "2024-03-04", "2024-03-08", limit=150)
    stats = fsim.stats()
    assert res.stats.retries > 0 and res.stats.rate_limited > 0
    assert (times(res.bars) == expected_t(fsim.config.seed, 1, "minute", date(2024, 3, 4), date(2024, 3, 8))).all()
    kinds = ("server_error", "gateway_timeout", "reset", "malformed", "null_results", "duplicate", "burst_429")
    assert sum(stats.get(f"fault_{k}", 0) > 0 for k in kinds) >= 5
    assert SENTINEL not in caplog.text + "".join(capsys.readouterr())


def test_duplicates_in_a_page_are_removed(fsim, faults):
    faults({"duplicate_rate": 1})
    res = PolygonClient(fsim.url, api_key=SENTINEL).get_aggregates("AAPL", 5, "minute", "2024-03-04", "2024-03-05")
    assert not res.bars["time"].duplicated().any()
    assert (times(res.bars) == expected_t(fsim.config.seed, 5, "minute", date(2024, 3, 4), date(2024, 3, 5))).all()


def test_null_results_with_bars_claimed_is_malformed_not_empty(fsim, faults):
    faults({"null_results_rate": 1})
    spent = RequestStats()
    with pytest.raises(errors.MalformedResponseError) as info:
        PolygonClient(fsim.url, api_key=SENTINEL).get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-08",
                                                                 stats=spent)
    assert info.value.retryable and spent.requests == 1


@pytest.mark.parametrize("fault, exc", [({"server_error_rate": 1}, errors.ServerError),
                                        ({"burst_429_rate": 1}, errors.RateLimitError),
                                        ({"reset_rate": 1}, errors.ConnectionError),
                                        ({"malformed_rate": 1}, errors.MalformedResponseError)])
def test_persistent_faults_give_typed_errors_after_bounded_attempts(fsim, faults, fault, exc):
    faults(fault)
    client = PolygonClient(fsim.url, api_key=SENTINEL, retry=RetryPolicy(attempts=3, initial_s=0.001, max_s=0.01))
    spent = RequestStats()
    with pytest.raises(exc) as info:
        client.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-08", stats=spent)
    assert spent.requests == 3 and spent.retries == 2 and len(spent.latencies) == 3
    assert SENTINEL not in str(info.value) + repr(info.value) + (info.value.body or "")


def test_slow_body_and_gateway_delay_hit_the_page_timeout(fsim, faults):
    faults({"slow_body_rate": 1, "slow_body_s": 1.0})
    client = PolygonClient(fsim.url, api_key=SENTINEL, timeout=0.3)
    with pytest.raises(errors.TimeoutError):
        client.get_aggregates("AAPL", 1, "minute", "2024-03-04", "2024-03-05")
    faults({"gateway_timeout_rate": 1, "gateway_timeout_s": 1.0})
    spent = RequestStats()
    with pytest.raises(errors.TimeoutError):
        client.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-08", stats=spent)
    assert spent.timeouts == spent.requests == 1


def test_auth_errors_are_never_retried(fsim):
    client = PolygonClient(fsim.url, api_key=SENTINEL + "-wrong", retry=FAST)
    spent = RequestStats()
    with pytest.raises(errors.AuthError) as info:
        client.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-08", stats=spent)
    assert info.value.status == 401 and "NOT_AUTHORIZED" in info.value.body
    assert spent.requests == 1 and spent.retries == 0
    assert SENTINEL not in str(info.value) + repr(info.value) + info.value.body


def test_retry_after_is_honoured():
    with start_simulator(SimulatorConfig(time_scale=0.0005, rate_limit_per_s=4, rate_limit_burst=1)) as s:
        client = PolygonClient(s.url, retry=RetryPolicy(attempts=6, initial_s=0.001, max_s=0.002, jitter_s=0.0))
        res = [client.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-08") for _ in range(3)]
        server = s.stats()
    retried = sum(r.stats.retries for r in res)
    assert sum(r.stats.rate_limited for r in res) == retried == server["status_429"] > 0
    # backoff alone would wait ~2 ms; obeying Retry-After keeps the server's 429 count to about one per request
    assert retried <= 3


def test_retry_policy_waits_the_larger_of_backoff_and_hint_capped():
    class State:
        attempt_number = 1

        class outcome:
            @staticmethod
            def exception():
                return errors.RateLimitError("429", retry_after=100.0)

    policy = RetryPolicy(initial_s=0.01, max_s=0.02, max_retry_after_s=3.0)
    assert policy.wait_s(State) == 3.0


def test_pacing_reaches_the_limit_with_no_429s():
    with start_simulator(SimulatorConfig(time_scale=0.0005, rate_limit_per_s=40, rate_limit_burst=2)) as s:
        client = PolygonClient(s.url, retry=FAST, pacer=AdaptivePacer(40))
        for _ in range(12):
            client.get_aggregates("AAPL", 1, "day", "2024-03-04", "2024-03-08")
        assert s.stats().get("status_429", 0) == 0


def test_client_for_wires_the_settings():
    off = client_for(FixSet().settings(), "http://127.0.0.1:9")
    on = client_for(FixSet.parse("api.backoff,api.pacing").settings(), "http://127.0.0.1:9", rate_limit_per_s=10)
    assert off.retry is None and off.pacer is None
    assert isinstance(on.retry, RetryPolicy) and on.pacer.rate == pytest.approx(9.5)
