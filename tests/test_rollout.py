"""A rollout splits every per-symbol fix: symbols outside it run the baseline path, those inside the fixed one."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date

import jsonschema
import pytest

from perflab.api.client import PolygonClient
from perflab.cli import main
from perflab.measure.results import JSON_SCHEMA, JobRecord
from perflab.pipeline.fixes import FIXES, FixSet, stable_fraction
from perflab.pipeline.scheduler import Workload, run_backfill

ROLLOUT = 0.3
IN, OUT = "AAPL", "MSFT"  # stable fractions 0.12 and 0.52
WORKLOAD = Workload((IN, OUT), ("1h",), date(2024, 3, 4), date(2024, 3, 11))
BARS = 96  # hourly bars per symbol in WORKLOAD: two pages at limit=5000 (83 hours each), one at 50000

Observe = Callable[[JobRecord], object]
EVIDENCE: dict[str, tuple[Observe, object, object]] = {
    # fix: (what to look at in a job, value on the fixed path, value on the baseline path)
    "api.big_pages": (lambda j: (j.requests, j.code_path["page_limit"]), (1, 50_000), (2, 5000)),
    "api.missing_only": (lambda j: (j.requests, j.code_path["missing_only"]), (0, True), (2, False)),
    "db.bulk": (lambda j: j.code_path["writer"], "orm_bulk", "orm_row"),
    "db.batch_size": (lambda j: j.code_path["batch_size"], 5000, None),
    "db.copy": (lambda j: j.code_path["writer"], "copy_binary", "orm_row"),
    "db.group_commit": (lambda j: j.code_path["writer"], "group_commit", "orm_row"),
    "compute.vectorized": (lambda j: j.code_path["features"], "vectorized", "loop"),
    "db.retry": (lambda j: j.code_path["db_retry"], True, False),
    "db.stream": (lambda j: j.code_path["window_days"], 833, None),  # 1h: windows of 833 days, or none
}


def _jobs(result) -> tuple[JobRecord, JobRecord]:
    by_symbol = {j.symbol: j for j in result.jobs}
    return by_symbol[IN], by_symbol[OUT]


def _backfill(sim, engine, spec: str, rollout: float = ROLLOUT):
    result = run_backfill(WORKLOAD, PolygonClient(sim.url), engine, FixSet.parse(spec, rollout=rollout), label=spec)
    assert result.failures == 0, [j.error for j in result.jobs]
    return result


def test_the_two_symbols_fall_on_either_side_of_the_rollout():
    assert stable_fraction(IN) < ROLLOUT <= stable_fraction(OUT)


@pytest.mark.parametrize("name", [n for n, f in FIXES.items() if f.per_symbol])
def test_symbols_outside_the_rollout_run_the_baseline_path_of_each_per_symbol_fix(clean_db, sim, name):
    observe, fixed, baseline = EVIDENCE[name]
    if name == "api.missing_only":  # both series stored and recorded complete: only a resume can skip them
        _backfill(sim, clean_db, name, rollout=1.0)
    inside, outside = _jobs(_backfill(sim, clean_db, name))
    assert observe(inside) == fixed and observe(outside) == baseline
    assert outside.rows == outside.feature_rows == BARS and inside.rows == (0 if name == "api.missing_only" else BARS)
    none_inside, none_outside = _jobs(_backfill(sim, clean_db, "none"))
    assert observe(none_inside) == observe(none_outside) == baseline


def test_group_commit_takes_only_in_rollout_jobs_and_leaves_the_others_their_baseline(clean_db, sim, tmp_path):
    result = _backfill(sim, clean_db, "db.group_commit,db.copy,compute.vectorized,api.backoff")
    inside, outside = _jobs(result)
    assert (inside.code_path["writer"], inside.code_path["features"]) == ("group_commit", "vectorized")
    assert (outside.code_path["writer"], outside.code_path["features"]) == ("orm_row", "loop")
    assert result.params["run_wide"] == ["api.backoff"] and result.params["rollout"] == ROLLOUT
    jsonschema.validate(json.loads(result.save(tmp_path / "r.json").read_text()), json.loads(JSON_SCHEMA.read_text()))


@pytest.mark.parametrize(("fixes", "rollout", "says"), [
    ("api.backoff,db.copy", "0.3", "rollout 0.3 cannot split api.backoff: every symbol gets them"),
    ("db.copy,db.retry", "0.3", None),
    ("api.backoff,db.copy", "1", None),
])
def test_the_cli_names_the_fixes_a_rollout_cannot_split(clean_db, capsys, fixes, rollout, says):
    code = main(["backfill", "--simulator", "--symbols", f"{IN},{OUT}", "--timeframes", "1d", "--from", "2024-03-04",
                 "--to", "2024-03-05", "--fixes", fixes, "--rollout", rollout])
    err = capsys.readouterr().err
    assert code == 0
    assert (says in err) if says else ("cannot split" not in err)
