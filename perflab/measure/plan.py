"""What the Phase 3 plan expected, verbatim from ``shared/seed/phase3-targeted-fixes.md``.

Kept as data so every report can set the plan's claim beside the number measured in that run;
nothing here is ever used as a result.
"""

from __future__ import annotations

PLAN_BASELINE = {"api_s": 312.1, "db_s": 175.1, "total_s": 487.2, "api_share": 0.64, "db_share": 0.36}

EXPECTED_PROGRESSION = (
    ("baseline", 487.2, 0.00),
    ("after fix 1", 430.0, 0.12),
    ("after fix 2", 380.0, 0.22),
    ("after fix 3", 362.0, 0.26),
)

PATH_CLAIMS = {
    "A": {"fixes": ("api.backoff", "api.batch", "api.parallel"), "total_before_s": 487.2, "total_after_s": 362.4,
          "improvement": 0.256, "claims": ("backoff: -70% API timeout failures", "batching: +15-20% throughput",
                                           "parallel clients: +40-50% throughput")},
    "B": {"fixes": ("db.indexes", "db.bulk", "db.batch_size"), "total_before_s": 466.7, "total_after_s": 302.5,
          "improvement": 0.352, "claims": ("indexes: INSERT +15-20% faster", "bulk insert: 10-20x faster",
                                           "batch size: 500-750 optimal, ~2,900 rows/s")},
    "C": {"fixes": ("compute.vectorized", "compute.parallel"), "total_before_s": 500.0, "total_after_s": 355.0,
          "improvement": 0.29, "claims": ("vectorization: 5-10x faster", "4 processes: 3-4x faster")},
}

SUCCESS_IMPROVEMENT = (0.30, 0.40)
