"""profiling helpers: cProfile and line_profiler runs come back as DataFrames naming the slow parts."""

from __future__ import annotations

import time

from perflab.profiling import CALL_COLUMNS, LINE_COLUMNS, profile_calls, profile_lines


def _slow(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    time.sleep(0.02)
    return total


def _outer() -> int:
    return _slow(20_000) + _slow(10)


def test_profile_calls_returns_top_functions_and_the_value():
    calls, profiled = profile_calls(_outer, top=3)
    assert list(calls.columns) == CALL_COLUMNS and len(calls) == 3
    assert profiled.value == sum(range(20_000)) + sum(range(10)) and profiled.seconds > 0.04
    slow = calls[calls["function"] == "_slow"].iloc[0]
    assert slow["ncalls"] == 2 and slow["where"].endswith(f":{_slow.__code__.co_firstlineno}")
    assert slow["cumtime"] >= slow["tottime"] and calls["cumtime"].is_monotonic_decreasing
    by_self = profile_calls(_outer, top=None, sort="tottime")[0]
    assert by_self["tottime"].is_monotonic_decreasing and len(by_self) > 3
    assert by_self.iloc[0]["where"] == "built-in"  # time.sleep: the time is spent outside Python


def test_profile_lines_times_each_line_of_the_chosen_functions():
    lines, profiled = profile_lines(_outer, _slow, top=None)
    assert list(lines.columns) == LINE_COLUMNS and set(lines["function"]) == {"_slow"}
    assert lines.iloc[0]["code"] == "time.sleep(0.02)" and lines.iloc[0]["hits"] == 2
    loop_line = lines[lines["code"] == "total += i"].iloc[0]
    assert loop_line["hits"] == 20_010
    assert abs(lines["share"].sum() - 1) < 1e-9 and profiled.value == _outer()
    assert len(profile_lines(_outer, _slow, top=2)[0]) == 2
