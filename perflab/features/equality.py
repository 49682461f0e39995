"""How close two feature frames are: the check that every implementation equals ``loop``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from perflab.features.definitions import NUMERIC_COLUMNS, TEXT_COLUMNS

RTOL = 1e-9


@dataclass
class FeatureDiff:
    """Worst relative error per numeric column, and the columns whose NaN or text values disagree."""

    max_rel_error: dict[str, float] = field(default_factory=dict)
    mismatched: list[str] = field(default_factory=list)

    def ok(self, rtol: float = RTOL) -> bool:
        return not self.mismatched and all(e <= rtol for e in self.max_rel_error.values())

    def merge(self, other: FeatureDiff) -> FeatureDiff:
        errors = {c: max(self.max_rel_error.get(c, 0.0), e) for c, e in other.max_rel_error.items()}
        return FeatureDiff({**self.max_rel_error, **errors}, sorted({*self.mismatched, *other.mismatched}))


def compare(reference: pd.DataFrame, other: pd.DataFrame) -> FeatureDiff:
    """Compare one series' features: same length, same NaN / None positions, relative error per column."""
    diff = FeatureDiff()
    if len(reference) != len(other) or not reference["time"].reset_index(drop=True).equals(
            other["time"].reset_index(drop=True)):
        return FeatureDiff(mismatched=["time"])
    for col in NUMERIC_COLUMNS:
        a, b = reference[col].to_numpy(dtype=float), other[col].to_numpy(dtype=float)
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            diff.mismatched.append(col)
            continue
        a, b = a[~nan_a], b[~nan_b]
        scale = np.maximum(np.abs(a), np.abs(b))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(a == b, 0.0, np.abs(a - b) / scale)
        diff.max_rel_error[col] = float(rel.max()) if len(rel) else 0.0
    for col in TEXT_COLUMNS:
        a, b = (f[col].astype(object).reset_index(drop=True) for f in (reference, other))
        if not a.equals(b):
            diff.mismatched.append(col)
    return diff


def compare_panels(reference: Sequence[pd.DataFrame], other: Sequence[pd.DataFrame]) -> FeatureDiff:
    """:func:`compare` over every series of two panels, keeping the worst error per column."""
    if len(reference) != len(other):
        return FeatureDiff(mismatched=["series"])
    total = FeatureDiff()
    for a, b in zip(reference, other):
        total = total.merge(compare(a, b))
    return total
