import pytest

from perflab.errors import InputError
from perflab.pipeline.fixes import FIXES, FixSet, PipelineSettings, stable_fraction


def test_none_is_the_baseline():
    assert FixSet.parse("none").settings() == PipelineSettings()


def test_all_but_one():
    fs = FixSet.parse("all,-db.copy")
    assert "db.copy" not in fs and "db.bulk" in fs
    assert fs.settings().writer == "orm_bulk"


def test_later_fix_wins_in_registry_order():
    assert FixSet.parse("db.copy,db.bulk").settings().writer == "copy_binary"


def test_wildcard_and_spec_roundtrip():
    fs = FixSet.parse("api.*")
    assert fs.names == {n for n in FIXES if n.startswith("api.")}
    assert FixSet.parse(fs.spec) == fs


def test_unknown_fix_names_the_choices():
    with pytest.raises(InputError, match="unknown fix 'db.fast'.*db.copy"):
        FixSet.parse("db.fast")


def test_master_switch_off_beats_env_list():
    env = {"ENABLE_PHASE3_OPTIMIZATION": "false", "PERFLAB_FIXES": "all"}
    assert FixSet.from_env(env).names == frozenset()
    assert FixSet.from_env({"ENABLE_PHASE3_OPTIMIZATION": "1"}).names == frozenset(FIXES)
    assert FixSet.from_env({"PERFLAB_FIXES": "db.copy"}).names == {"db.copy"}


def test_rollout_is_stable_and_roughly_the_fraction():
    symbols = [f"S{i}" for i in range(2000)]
    fs = FixSet.parse("db.copy", rollout=0.1)
    chosen = [s for s in symbols if fs.in_rollout(s)]
    assert chosen == [s for s in symbols if FixSet.parse("db.copy", rollout=0.1).in_rollout(s)]
    assert 0.07 < len(chosen) / len(symbols) < 0.13
    out = next(s for s in symbols if not fs.in_rollout(s))
    assert fs.settings(out).writer == "orm_row" and fs.settings(chosen[0]).writer == "copy_binary"
    assert 0 <= stable_fraction("AAPL") < 1


def test_run_wide_fix_ignores_rollout():
    fs = FixSet.parse("api.parallel", rollout=0.0)
    assert fs.settings("AAPL").api_workers > 1


def test_outside_the_rollout_only_the_run_wide_fixes_apply():
    fs = FixSet.parse("all", rollout=0.3)
    out = next(s for s in (f"S{i}" for i in range(100)) if not fs.in_rollout(s))
    assert fs.settings(out) == FixSet.parse(fs.run_wide()).settings()
    assert fs.settings(out).group_commit is False and fs.settings(out).db_retry is False
    assert fs.settings(out).writer == "orm_row" and fs.settings(out).backoff is True  # the client is shared


def test_run_wide_names_the_enabled_fixes_a_rollout_cannot_split():
    assert FixSet.parse("all").run_wide() == tuple(n for n, f in FIXES.items() if not f.per_symbol)
    assert FixSet.parse("api.backoff,db.copy,db.group_commit,db.retry", rollout=0.5).run_wide() == ("api.backoff",)
    assert FixSet.parse("db.copy").run_wide() == ()
