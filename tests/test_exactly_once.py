"""A job runs once on the GPU, even when its submission's answer is lost.

ComfyUI may queue a prompt and still fail to answer (a 500 from a proxy, a timeout while it
validates a big graph), and it does not refuse a prompt_id it has seen: a second POST runs the
graph again. So hotfolder looks its own prompt_id up after every uncertain submission and
submits again only once the prompt is known not to be on the server.
"""

from __future__ import annotations

from collections import Counter

import requests


def executions(sim) -> Counter[str]:
    """How often the server ran each job (by its filename_prefix, the same in every
    submission of one job)."""
    history = requests.get(f"{sim.url}/history", params={"max_items": 100000}, timeout=10).json()
    counts: Counter[str] = Counter()
    for entry in history.values():
        graph = entry["prompt"][2]
        counts.update(node["inputs"]["filename_prefix"] for node in graph.values()
                      if node["class_type"] == "SaveImage")
    return counts


def _run_all(hot, names: list[str]) -> None:
    hot.start()
    for name in names:
        hot.drop(name, f"a prompt for {name}")
    for name in names:
        assert hot.finished(name, timeout=90) == "done", hot.log()[-3000:]


def _delivered_once(hot, names: list[str]) -> None:
    outputs = sorted(p.name for p in hot.dir("outbox").iterdir() if p.suffix == ".png")
    assert outputs == sorted(f"{n[:-4]}_00001.png" for n in names)


def test_a_500_after_queueing_never_runs_a_job_twice(hot, sim):
    sim.fault_state.update({"http_5xx_after_queue_rate": 0.3, "http_5xx_after_queue_next": 3})
    names = [f"job{n:02d}.txt" for n in range(24)]
    _run_all(hot, names)
    assert sim.stats()["http_5xx_after_queue"] >= 3
    ran = executions(sim)
    assert len(ran) == 24 and set(ran.values()) == {1}, ran
    _delivered_once(hot, names)
    assert "job.submit_unconfirmed" in hot.log()


def test_a_submission_that_times_out_before_it_is_queued_runs_once(hot, sim):
    """The server takes the prompt only after the client gave up waiting for the answer: it
    is not there at the first look, and appears a moment later."""
    hot.config["comfy"]["request_timeout"] = 1
    sim.fault_state.update({"prompt_delay_seconds": 1.6})
    names = [f"slow{n}.txt" for n in range(4)]
    _run_all(hot, names)
    ran = executions(sim)
    assert len(ran) == 4 and set(ran.values()) == {1}, ran
    _delivered_once(hot, names)
