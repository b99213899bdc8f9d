"""The scheduling benchmarks' figures (benchmarks/runlog.py), and that the fleet scenario runs.

The benchmarks are not part of this suite; this checks only that their arithmetic says what
docs/performance.md says it does, and that one scenario still starts, at a tiny size.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import runlog
        import scenarios
        import scenarios_sched
        yield runlog, scenarios, scenarios_sched
    finally:
        sys.path.remove(str(BENCH))


def test_overtaking_counts_later_jobs_that_began_first(bench) -> None:
    runlog = bench[0]
    order = ["a", "b", "c", "d"]
    fifo = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}
    assert runlog.overtaking(order, fifo)["max_overtaken"] == 0
    grouped = {"a": 0.0, "c": 1.0, "b": 5.0, "d": 6.0}  # c overtook b
    figures = runlog.overtaking(order, grouped)
    assert (figures["max_overtaken"], figures["max_overtaken_job"]) == (1, "b")
    assert (figures["max_overtaking_s"], figures["max_overtaking_job"]) == (4.0, "b")
    late = {"a": 9.0, "b": 1.0, "c": 2.0, "d": 3.0}  # a waited for all three
    figures = runlog.overtaking(order, late)
    assert (figures["max_overtaken"], figures["max_overtaking_s"]) == (3, 8.0)


def test_busy_fraction_over_the_steady_window(bench) -> None:
    runlog = bench[0]
    one = [(0.0, 2.0), (2.0, 4.0), (4.5, 6.5), (6.5, 8.5)]
    two = [(1.0, 3.0), (3.0, 5.0), (5.0, 7.0)]
    begin, end = runlog.steady_window([one, two])
    assert (begin, end) == (1.0, 7.0)  # the later first start, the earlier last end
    assert runlog.busy_fraction(one, begin, end) == pytest.approx(5.5 / 6)
    assert runlog.busy_fraction(two, begin, end) == 1.0
    assert math.isnan(runlog.busy_fraction(one, 3.0, 3.0))
    report = {"runs": [{"started_at": 1.0, "finished_at": 2.0, "success": True},
                       {"started_at": 2.0, "finished_at": 2.5, "success": False}]}
    assert runlog.intervals(report) == [(1.0, 2.0)]


def test_the_fleet_scenario_runs_at_a_tiny_size(bench, tmp_path: Path) -> None:
    _, scenarios, sched = bench
    s = scenarios.Settings(quick=True, settle=0.2)
    s.fleet_servers, s.fleet_jobs, s.fleet_job_seconds = 2, 4, 0.05
    result = sched.fleet(tmp_path, s)
    assert result.figures["runs_per_server"] and sum(result.figures["runs_per_server"]) == 4
    assert result.figures["daemon_problems"] == {}
    assert len(result.checks) == 3
