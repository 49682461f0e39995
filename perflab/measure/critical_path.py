"""What the wall clock waited on, and what a faster stage would buy: a run's critical path and a what-if replay.

Both read a run's spans (:attr:`RunResult.spans`) and the order the dispatch imposed on them:

* a job's stages run one after another on its worker; a worker runs its jobs one after another;
* a timespan group (``api.batch``) starts when the previous group's jobs have all finished;
* a group commit (``db.group_commit``) starts when its committer thread is free and its jobs were handed over.

:func:`critical_path` walks back from the last span to finish, each time to the predecessor that finished last
(the one it waited for), and adds up the stages on that chain: the plan's busy shares say where the work is,
the critical path says what the wall clock was waiting for (they differ when stages overlap).

:func:`what_if` replays the schedule with one stage ``k`` times faster: the same workers taking the same job
order from one queue, the same committer groups, the recorded gaps between spans kept, and every request of an
api span through the preset's rate limit (a token bucket), so no speed-up beats requests / limit.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

from perflab.measure.results import RunResult
from perflab.measure.timing import STAGES
from perflab.measure.verdict import PLAN_RULES, classify

WAIT = "wait"
"""Critical-path time in no stage: dispatch staggers, the scheduler's own overhead, start-up and shut-down."""
FREE = float("inf")
"""``k`` for a stage that costs nothing."""
SPEEDUPS: tuple[float, ...] = (1.5, 2.0, 4.0, FREE)
REQUEST_COUNT_FIXES = ("api.big_pages", "api.missing_only", "db.stream")
"""Fixes that change how many requests a job makes: the replay keeps each span's requests, so it cannot predict them."""

Job = tuple[str, str]


@dataclass(frozen=True)
class Span:
    """One recorded stage interval with where it ran (an entry of a run's ``spans``)."""

    index: int
    stage: str
    start: float
    end: float
    tid: int
    jobs: tuple[Job, ...]
    requests: int

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class CriticalPath:
    """The chain of spans the wall clock waited on, and the seconds of it per stage (plus :data:`WAIT`)."""

    wall_seconds: float
    spans: list[Span]
    seconds: dict[str, float]

    @property
    def shares(self) -> dict[str, float]:
        """Share of the wall time per stage on the path (with :data:`WAIT`), adding up to 1."""
        return {k: v / self.wall_seconds if self.wall_seconds else 0.0 for k, v in self.seconds.items()}

    @property
    def stage_shares(self) -> dict[str, float]:
        """Shares of the path's stage time alone (no wait): what the plan's rules read."""
        total = sum(self.seconds[s] for s in STAGES) or 1.0
        return {s: self.seconds[s] / total for s in STAGES}

    @property
    def path(self) -> str:
        """The path the plan's rules pick from the critical path's stage shares."""
        return next(rule.path for rule in PLAN_RULES if rule.matches(self.stage_shares))


@dataclass
class Schedule:
    """A run's spans ordered as the dispatch ran them: per worker job, per committer group, and run-level spans."""

    spans: list[Span]
    wall_seconds: float
    groups: list[list[Job]]
    job_spans: dict[Job, list[Span]] = field(default_factory=dict)
    """A job's spans on its worker, in order."""
    commits: list[list[Span]] = field(default_factory=list)
    """Each group commit's spans (on a committer thread), in order of start."""
    setup: list[Span] = field(default_factory=list)
    """Spans of no job (e.g. the run's coverage query), before the dispatch starts."""


def _spans(result: RunResult) -> list[Span]:
    return [Span(i, s["stage"], s["start"], s["end"], s["tid"], tuple(map(tuple, s["jobs"])),
                 len(s.get("requests", []))) for i, s in enumerate(result.spans)]


def dispatch_groups(result: RunResult) -> list[list[Job]]:
    """The run's jobs in the groups its dispatch ran one after another (one group unless ``api.batch``)."""
    from perflab.pipeline.dispatch import Dispatch
    from perflab.pipeline.fixes import PipelineSettings

    jobs = [(j.symbol, j.timeframe) for j in result.jobs]
    try:
        settings = PipelineSettings(**result.params.get("settings", {}))
    except TypeError:  # saved by a perflab with other settings: take the jobs as one group
        return [jobs]
    return [[jobs[i] for i in group] for group in Dispatch.from_settings(settings).groups(jobs)]


def schedule(result: RunResult) -> Schedule:
    """``result``'s spans sorted into jobs, commits and set-up; a ValueError when the run recorded no spans."""
    spans = _spans(result)
    if not spans:
        raise ValueError(f"run {result.run_id} recorded no spans (saved before spans were kept, or not instrumented)")
    out = Schedule(spans, result.wall_seconds, dispatch_groups(result))
    worker: dict[Job, int] = {}
    commits: dict[tuple[int, tuple[Job, ...]], list[Span]] = {}
    for span in sorted(spans, key=lambda s: s.start):
        if not span.jobs:
            out.setup.append(span)
            continue
        tid = worker.setdefault(span.jobs[0], span.tid)
        if len(span.jobs) == 1 and span.tid == tid:
            out.job_spans.setdefault(span.jobs[0], []).append(span)
        else:
            commits.setdefault((span.tid, span.jobs), []).append(span)
    out.commits = sorted(commits.values(), key=lambda c: c[0].start)
    return out


def _predecessors(sched: Schedule) -> dict[int, list[Span]]:
    """For each span, the spans it could not start before (see the module's docstring)."""
    preds: dict[int, list[Span]] = defaultdict(list)
    by_tid: dict[int, list[Span]] = defaultdict(list)
    for span in sorted(sched.spans, key=lambda s: s.start):
        if by_tid[span.tid]:
            preds[span.index].append(by_tid[span.tid][-1])
        by_tid[span.tid].append(span)
    before: list[Span] = list(sched.setup)
    for group in sched.groups:
        ran = [sched.job_spans[j] for j in group if j in sched.job_spans]
        for spans in ran:
            preds[spans[0].index].extend(s for s in before if s.end <= spans[0].start)
            for a, b in zip(spans, spans[1:]):
                preds[b.index].append(a)
        before = [spans[-1] for spans in ran] or before
    for commit in sched.commits:
        lasts = [sched.job_spans[j][-1] for j in commit[0].jobs if j in sched.job_spans]
        preds[commit[0].index].extend(lasts)
        for a, b in zip(commit, commit[1:]):
            preds[b.index].append(a)
    return preds


def critical_path(result: RunResult) -> CriticalPath:
    """The chain of spans the wall clock waited on: from the last span to end, back through the predecessor that
    ended last each time; the time between them (and before the first, after the last) counts as :data:`WAIT`."""
    sched = schedule(result)
    preds = _predecessors(sched)
    current = max(sched.spans, key=lambda s: s.end)
    chain = [current]
    while True:
        ready = [p for p in preds[current.index] if p.end <= current.start + 1e-9]
        if not ready:
            break
        current = max(ready, key=lambda p: p.end)
        chain.append(current)
    chain.reverse()
    seconds = {s: 0.0 for s in (*STAGES, WAIT)}
    for span in chain:
        seconds[span.stage] = seconds.get(span.stage, 0.0) + span.seconds
    seconds[WAIT] = max(0.0, result.wall_seconds - sum(v for k, v in seconds.items() if k != WAIT))
    return CriticalPath(result.wall_seconds, chain, seconds)


def compare_views(result: RunResult) -> pd.DataFrame:
    """The plan's busy-share view beside the critical path's, per stage, with the path each would pick."""
    busy = classify(result)
    cp = critical_path(result)
    frame = pd.DataFrame({"busy s": busy.seconds, "busy share": busy.shares,
                          "critical-path s": {s: cp.seconds[s] for s in STAGES},
                          "critical-path share": cp.stage_shares}).reindex(list(STAGES))
    frame.loc[WAIT] = [float("nan"), float("nan"), cp.seconds[WAIT], float("nan")]
    frame.attrs.update(busy_path=busy.path, critical_path=cp.path)
    return frame


def views_sentence(result: RunResult) -> str:
    """One sentence: the path the busy shares pick and the one the critical path picks, and whether they agree."""
    busy, cp = classify(result), critical_path(result)
    lead = max(STAGES, key=lambda s: cp.stage_shares[s])
    said = (f"The plan's rule on busy shares picks Path {busy.path}; the critical path (what the "
            f"{cp.wall_seconds:.2f} s of wall time waited on: {lead} {cp.stage_shares[lead]:.0%} of its stage time, "
            f"{cp.shares[WAIT]:.0%} waiting) picks Path {cp.path}")
    if busy.path == cp.path:
        return said + ": they agree."
    return said + (": they disagree — busy time adds up work that ran in parallel, the critical path counts only "
                   "what the wall clock waited for, so fix the critical path's stage first.")


# --- what-if: replay the schedule with one stage faster ---------------------------------------------------------


class _Bucket:
    """The rate limit as a token bucket (GCRA): when the request wanting to go at ``t`` may go."""

    def __init__(self, rate: float | None, burst: float) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.tolerance = max(0.0, burst - 1.0) * self.interval
        self.tat = 0.0

    def grant(self, t: float) -> float:
        if not self.interval:
            return t
        go = max(t, self.tat - self.tolerance)
        self.tat = max(self.tat, go) + self.interval
        return go


def _duration(span: Span, stage: str, k: float) -> float:
    if span.stage != stage:
        return span.seconds
    return 0.0 if k == FREE else span.seconds / k


def _run_span(span: Span, begin: float, stage: str, k: float, bucket: _Bucket) -> float:
    """The replayed end of ``span`` started at ``begin``: its (scaled) time, an api span's requests spread over it
    and each held until the rate limit lets it go."""
    seconds = _duration(span, stage, k)
    if span.stage != "api" or not span.requests:
        return begin + seconds
    step, t = seconds / span.requests, begin
    for _ in range(span.requests):
        t = bucket.grant(t) + step
    return t


def replay(result: RunResult, stage: str = "api", k: float = 1.0, rate_limit_per_s: float | None = None,
           burst: float | None = None) -> float:
    """Predicted wall seconds of ``result``'s run with ``stage`` ``k`` times faster (``k=1``: the run as recorded)."""
    sched = schedule(result)
    bucket = _Bucket(rate_limit_per_s, burst or max(1.0, (rate_limit_per_s or 0.0) / 10))
    ends: dict[int, float] = {}
    t, prev = 0.0, None
    for span in sched.setup:  # before the dispatch: one after another, the recorded gaps kept
        t = span.start if prev is None else t + (span.start - prev.end)
        ends[span.index] = t = _run_span(span, t, stage, k, bucket)
        prev = span
    group_start = t
    recorded_start = sched.setup[-1].end if sched.setup else 0.0
    for group in sched.groups:
        ran = [j for j in group if j in sched.job_spans]
        if not ran:
            continue
        runs = sorted(ran, key=lambda j: sched.job_spans[j][0].start)
        first = {}
        for j in runs:
            first.setdefault(sched.job_spans[j][0].tid, sched.job_spans[j][0].start)
        lead = {j: _lead(sched, j) for j in runs}
        free = [group_start + (s - recorded_start) for s in sorted(first.values())]
        heapq.heapify(free)
        group_end = group_start
        for j in runs:
            at = heapq.heappop(free) + lead[j]
            spans = sched.job_spans[j]
            for a, b in zip([None, *spans], spans):
                at += 0.0 if a is None else b.start - a.end
                ends[b.index] = at = _run_span(b, at, stage, k, bucket)
            heapq.heappush(free, at)
            group_end = max(group_end, at)
        recorded_end = max(sched.job_spans[j][-1].end for j in ran)
        recorded_start = recorded_end
        group_start = group_end
    threads: dict[int, float] = {}
    for commit in sched.commits:
        handed = [ends[sched.job_spans[j][-1].index] for j in commit[0].jobs if j in sched.job_spans]
        at = max([threads.get(commit[0].tid, 0.0), *handed])
        for a, b in zip([None, *commit], commit):
            at += 0.0 if a is None else b.start - a.end
            ends[b.index] = at = _run_span(b, at, stage, k, bucket)
        threads[commit[0].tid] = at
    tail = result.wall_seconds - max(s.end for s in sched.spans)
    return max(ends.values()) + max(0.0, tail)


def _lead(sched: Schedule, job: Job) -> float:
    """Seconds between the job's first span and the end of the span before it on its worker (the dispatch's own
    time per job), or 0 for a worker's first job."""
    first = sched.job_spans[job][0]
    before = [s.end for s in sched.spans if s.tid == first.tid and s.end <= first.start and s.jobs]
    return first.start - max(before) if before else 0.0


@dataclass(frozen=True)
class Prediction:
    """The replay's wall time with ``stage`` ``k`` times faster, against the replay of the run as recorded."""

    stage: str
    k: float
    wall_seconds: float
    baseline_seconds: float
    note: str = ""

    @property
    def change(self) -> float:
        return self.wall_seconds / self.baseline_seconds - 1 if self.baseline_seconds else 0.0


def _caveat(result: RunResult, stage: str) -> str:
    if stage != "api":
        return ""
    limited = sum(j.rate_limited + j.retries for j in result.jobs)
    notes = [f"assumes the same {result.requests:,} requests: a fix that changes their number "
             f"({', '.join(REQUEST_COUNT_FIXES)}) is outside this model"]
    if limited:
        notes.append(f"the run had {limited} 429s/retries, whose waits are scaled with the stage")
    return "; ".join(notes)


def what_if(result: RunResult, rate_limit_per_s: float | None = None, burst: float | None = None,
            stages: tuple[str, ...] = STAGES, speedups: tuple[float, ...] = SPEEDUPS) -> list[Prediction]:
    """Predicted wall seconds with each of ``stages`` made each of ``speedups`` times faster (FREE: costs nothing)."""
    base = replay(result, rate_limit_per_s=rate_limit_per_s, burst=burst)
    return [Prediction(stage, k, replay(result, stage, k, rate_limit_per_s, burst), base, _caveat(result, stage))
            for stage in stages for k in speedups]


def what_if_table(predictions: list[Prediction]) -> pd.DataFrame:
    """One row per stage, one column per speed-up: predicted wall seconds (and the change in ``attrs``)."""
    rows = defaultdict(dict)
    for p in predictions:
        rows[p.stage]["free" if p.k == FREE else f"{p.k:g}x"] = p.wall_seconds
    return pd.DataFrame(rows).T


def what_if_sentences(predictions: list[Prediction], k: float = 2.0) -> list[str]:
    """"If api were 2x faster the backfill would take 1.23 s (-18%)", one per stage, with the model's caveat."""
    out = []
    for p in predictions:
        if p.k == k:
            note = f" ({p.note})" if p.note else ""
            out.append(f"If {p.stage} were {k:g}x faster the backfill would take {p.wall_seconds:.2f} s "
                       f"({p.change:+.0%}){note}.")
    return out
