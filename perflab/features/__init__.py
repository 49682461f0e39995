"""Feature computation: one feature set, several implementations chosen by name."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from perflab.errors import InputError
from perflab.features import loop

IMPLEMENTATIONS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "loop": loop.compute,
}


def compute_features(bars: pd.DataFrame, impl: str = "loop") -> pd.DataFrame:
    """Compute the feature set of one series of bars with the named implementation."""
    try:
        fn = IMPLEMENTATIONS[impl]
    except KeyError:
        raise InputError(f"unknown feature implementation {impl!r}: use one of {', '.join(IMPLEMENTATIONS)}") from None
    return fn(bars)
