"""Feature computation: one feature set (see :mod:`perflab.features.definitions`), several implementations.

Every implementation offers ``compute(bars)`` for one (symbol, timeframe) series and
``compute_panel([bars, ...])`` for many at once; ``loop`` is the reference the others must equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from perflab.errors import InputError
from perflab.features import loop, parallel, vectorized
from perflab.features.definitions import FEATURE_COLUMNS


@dataclass(frozen=True)
class FeatureImpl:
    """One implementation of the feature set, chosen by name."""

    name: str
    summary: str
    compute: Callable[[pd.DataFrame], pd.DataFrame]
    compute_panel: Callable[[Sequence[pd.DataFrame]], list[pd.DataFrame]]


IMPLEMENTATIONS: dict[str, FeatureImpl] = {
    impl.name: impl
    for impl in (
        FeatureImpl("loop", "per-bar Python loops (the plan's slow version; the reference)",
                    loop.compute, loop.compute_panel),
        FeatureImpl("vectorized", "numpy/bottleneck over a NaN-padded panel, one pass per statistic",
                    vectorized.compute, vectorized.compute_panel),
        FeatureImpl("parallel", "vectorized, chunks of series on a long-lived process pool where it pays",
                    parallel.compute, parallel.compute_panel),
    )
}


def get_impl(name: str) -> FeatureImpl:
    """Look up an implementation; an unknown name raises :class:`InputError` listing the known ones."""
    try:
        return IMPLEMENTATIONS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown feature implementation {name!r}: use one of {', '.join(IMPLEMENTATIONS)}") from None


def compute_features(bars: pd.DataFrame, impl: str = "loop") -> pd.DataFrame:
    """Compute the feature set of one series of bars with the named implementation."""
    return get_impl(impl).compute(bars)


def compute_panel(series: Sequence[pd.DataFrame], impl: str = "vectorized") -> list[pd.DataFrame]:
    """Compute the feature set of several series at once, one frame per series, same order."""
    return get_impl(impl).compute_panel(series)


__all__ = ["FEATURE_COLUMNS", "IMPLEMENTATIONS", "FeatureImpl", "compute_features", "compute_panel", "get_impl"]
