"""profiling helpers: cProfile and line_profiler runs come back as DataFrames naming the slow parts."""

from __future__ import annotations

import time

import pytest

from perflab.measure.profiling import CALL_COLUMNS, LINE_COLUMNS, profile_calls, profile_lines


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
    assert (lines["time_s"] == lines["incl_s"]).all()  # one function: nothing nested to take out
    assert len(profile_lines(_outer, _slow, top=2)[0]) == 2


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class _Napper:
    def nap(self, seconds: float) -> float:
        return _nap(seconds)

    def twice(self) -> float:
        return self.nap(0.02) + self.nap(0.02)


def _caller() -> float:
    first = _nap(0.05)
    second = _nap(0.03)  # a second call site of the same callee
    return first + second


def _own(lines, function: str) -> float:
    return float(lines.loc[lines["function"] == function, "time_s"].sum())


def test_a_profiled_callee_inside_a_profiled_caller_counts_once():
    lines, profiled = profile_lines(_caller, _caller, _nap, top=None)
    assert profiled.value == 0.08
    # Bounds sit halfway to the double count, so a loaded machine's late wake-ups cannot fail the test.
    assert 0.08 <= profiled.seconds < 0.12, "the 0.08 s of sleep once, not again in the caller's lines (0.16 s)"
    assert 0.08 <= _own(lines, "_nap") < 0.12 and _own(lines, "_caller") < 0.02
    call = lines[lines["code"].str.startswith("first = _nap")].iloc[0]
    assert call["incl_s"] >= 0.05 and call["time_s"] < 0.02  # the call line keeps only its own work
    assert lines["share"].sum() == pytest.approx(1.0) and profiled.seconds == pytest.approx(lines["time_s"].sum())
    assert lines.iloc[0]["function"] == "_nap"


def test_nesting_three_deep_through_methods_counts_each_second_once():
    lines, profiled = profile_lines(_Napper().twice, _Napper.twice, _Napper.nap, _nap, top=None)
    assert 0.04 <= profiled.seconds < 0.08  # counted three times it would be 0.12 s
    assert 0.04 <= _own(lines, "_nap") and _own(lines, "_Napper.nap") + _own(lines, "_Napper.twice") < 0.02


def test_a_callee_also_called_from_outside_the_profiled_functions_counts_once():
    lines, profiled = profile_lines(lambda: _caller() + _nap(0.04), _caller, _nap, top=None)
    assert 0.12 <= profiled.seconds < 0.18, "0.05 + 0.03 s under _caller and 0.04 s called directly, each once"
    assert 0.12 <= _own(lines, "_nap") and _own(lines, "_caller") < 0.02
