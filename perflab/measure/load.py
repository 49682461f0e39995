"""A load probe for a shared rate limit: request loops through one process's pacer on a shared token bucket.

Run in each worker process of a cluster (``perflab bench cluster``, the global-limit test), it offers far more
load than the limit, so what comes back (requests answered, 429s, the bucket's cost per token) measures the limit.
"""

from __future__ import annotations

import time
from datetime import date

from perflab.api.client import PolygonClient
from perflab.api.errors import RateLimitError
from perflab.db.engine import get_engine
from perflab.db.rate_bucket import SharedPacer


def paced_load(engine_url: str, base_url: str, bucket: str, rate: float, start_at: float, seconds: float,
               threads: int = 4) -> dict:
    """In one worker process: ``threads`` loops of one request after another through the process's pacer on the
    shared bucket, from ``start_at`` (epoch) for ``seconds``; what came back. (Several loops per process, so the
    offered load stays far above the limit even on a busy machine, where one request costs tens of ms of CPU.)"""
    from concurrent.futures import ThreadPoolExecutor

    pacer = SharedPacer(get_engine(engine_url), bucket, rate)
    client = PolygonClient(base_url, pacer=pacer)
    late = time.time() - start_at
    stop = start_at + seconds

    def loop(_: int) -> tuple[int, int]:
        ok = limited = 0
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < stop:
            try:
                client.get_aggregates("AAPL", 1, "day", date(2024, 3, 4), date(2024, 3, 4))
                ok += 1
            except RateLimitError:
                limited += 1
        return ok, limited

    try:
        with ThreadPoolExecutor(threads) as pool:
            counts = list(pool.map(loop, range(threads)))
    finally:
        client.close()
        pacer.close()
    return {"ok": sum(c[0] for c in counts), "limited": sum(c[1] for c in counts), "takes": pacer.takes,
            "take_s": pacer.take_seconds, "late_s": late}
