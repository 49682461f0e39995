"""The notebook harness: one configuration is never measured twice within a report."""

from perflab.studies.lab import open_lab


def test_repeat_reuses_runs_measured_into_the_same_out_dir(clean_db, sim, tmp_path):
    first = open_lab("smoke", sim.url, str(tmp_path)).repeat("db.copy", n=2)
    again = open_lab("smoke", sim.url, str(tmp_path)).repeat("db.copy", "copy again", n=2)
    assert [r.run_id for r in again.runs] == [r.run_id for r in first.runs] and again.label == "copy again"
    more = open_lab("smoke", sim.url, str(tmp_path)).repeat("db.copy", n=3)
    assert [r.run_id for r in more.runs[:2]] == [r.run_id for r in first.runs] and len(more.runs) == 3


def test_repeat_of_the_baseline_counts_notebook_01s_run(clean_db, sim, tmp_path):
    lab = open_lab("smoke", sim.url, str(tmp_path))
    saved = lab.backfill("none", label="baseline")
    lab.save(saved, "baseline")
    runs = lab.repeat("none", n=2).runs
    assert runs[0].run_id == saved.run_id and len(runs) == 2


def test_run_caches_of_long_fix_sets_fit_a_file_name():
    """``all`` spells out every fix: its cache file is named by a hash, short specs keep their readable name."""
    from perflab.pipeline.fixes import FixSet
    from perflab.studies.lab import _cache_name

    assert _cache_name(FixSet.parse("db.copy,api.backoff")) == "api.backoff+db.copy@1"
    long = _cache_name(FixSet.parse("all"))
    assert len(long) < 100 and long != _cache_name(FixSet.parse("all,-db.retry"))
    assert long == _cache_name(FixSet.parse("all")), "stable, so a notebook finds the runs another one made"
