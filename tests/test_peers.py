"""The peers benchmark's harness on a small slice: the official client loop, its bulk pattern and perflab store the
same bars, and the comparison catches a bar that differs."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date
from pathlib import Path

import pytest

pytest.importorskip("massive")

_SPEC = importlib.util.spec_from_file_location(
    "bench_peers", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_peers.py")
peers = sys.modules["bench_peers"] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(peers)


def test_three_ways_store_identical_bars(sim, clean_db):
    preset = peers.peers_preset(sim.config.time_scale, symbols=2, end=date(2024, 3, 5)).with_overrides(
        timeframes=("1m", "1h", "1d"))
    result = peers.run_peers(sim, clean_db, preset)
    assert result.identical, result.differences
    assert result.bars > 2 * 2 * 800  # two symbols' two days of extended-session minutes, plus hours and days
    assert [w.rows for w in (result.loop, result.bulk, result.perflab)] == [result.bars] * 3
    assert result.loop.requests == result.bulk.requests == 6  # each job is one page at either page size here


def test_comparison_catches_a_changed_bar():
    reference = {("AAPL", "1m", 0, 1.0, 2.0, 0.5, 1.5, 100.0, 1.2, 7), ("AAPL", "1m", 60_000, 1.5, 2.0, 1.0, 1.8,
                                                                         50.0, 1.6, 3)}
    changed = {("AAPL", "1m", 0, 1.0, 2.0, 0.5, 1.5, 100.0, 1.2, 7), ("AAPL", "1m", 60_000, 1.5, 2.0, 1.0, 1.8,
                                                                       50.0, 1.6000000001, 3)}
    same, other = peers.Way("same"), peers.Way("other")
    lines = peers.compare_stored(reference, [(same, set(reference)), (other, changed)])
    assert (same.missing, same.extra) == (0, 0)
    assert (other.rows, other.missing, other.extra) == (2, 1, 1)
    assert len(lines) == 1 and lines[0].startswith("other: 1 bars missing, 1 extra")
