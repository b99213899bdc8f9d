"""Figures from the simulators' run logs (`GET /sim/runs`): who overtook whom, how busy a GPU was.

Pure functions over plain lists and dicts, so `tests/test_benchlib_runlog.py` checks them
without starting anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def overtaking(order: Sequence[str], starts: dict[str, float]) -> dict[str, Any]:
    """How far a schedule strayed from first come, first served.

    `order` is the jobs in the order they were dropped, `starts` when each began executing.
    A job is overtaken by every later-dropped job that began before it; its overtaking time is
    from the first of those starts to its own. Returns the worst job by count and the longest
    time (both 0 for a strictly first-come-first-served run).
    """
    worst_count, worst_job, longest, longest_job = 0, None, 0.0, None
    for i, job in enumerate(order):
        earlier = [starts[k] for k in order[i + 1:] if starts[k] < starts[job]]
        if len(earlier) > worst_count:
            worst_count, worst_job = len(earlier), job
        if earlier and starts[job] - min(earlier) > longest:
            longest, longest_job = starts[job] - min(earlier), job
    return {"max_overtaken": worst_count, "max_overtaken_job": worst_job,
            "max_overtaking_s": round(longest, 3), "max_overtaking_job": longest_job}


def steady_window(per_server: Sequence[Sequence[tuple[float, float]]]) -> tuple[float, float]:
    """From the moment the last server began its first run to the moment the first server ended
    its last: the stretch in which every server had been given work and none had run out yet.
    """
    begin = max(min(start for start, _ in runs) for runs in per_server)
    end = min(max(stop for _, stop in runs) for runs in per_server)
    return begin, end


def busy_fraction(runs: Sequence[tuple[float, float]], begin: float, end: float) -> float:
    """The share of [begin, end] this server spent running prompts (its runs never overlap)."""
    if end <= begin:
        return float("nan")
    busy = sum(max(0.0, min(stop, end) - max(start, begin)) for start, stop in runs)
    return busy / (end - begin)


def intervals(report: dict[str, Any]) -> list[tuple[float, float]]:
    """(start, end) of each successful run in a `/sim/runs` answer."""
    return [(r["started_at"], r["finished_at"]) for r in report["runs"] if r["success"]]
