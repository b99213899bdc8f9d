"""Keeping GPUs busy: the in-flight window, WebSocket trouble, several servers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import requests
from harness import ROOT, HotFolder, make_config, wait_for

from hotfolder.sim import Faults, SimServer


def run_jobs(hot: HotFolder, count: int, timeout: float = 60) -> list[dict]:
    names = [f"job{i:02d}.txt" for i in range(count)]
    for name in names:
        hot.drop(name, f"prompt {name}")
    wait_for(lambda: all((hot.dir("done") / n).exists() for n in names), timeout=timeout,
             what=f"{count} jobs done\n{hot.log()[-3000:]}")
    return [hot.sidecar(Path(n).stem) for n in names]


def multi(tmp_path: Path, sims: list[SimServer], **server_extra: dict) -> HotFolder:
    config = make_config(tmp_path, sims[0].url)
    config["servers"] = [{"url": s.url, "name": f"gpu{i}", **server_extra.get(f"gpu{i}", {})}
                         for i, s in enumerate(sims)]
    return HotFolder(base=tmp_path, server_url=sims[0].url, config=config)


def test_window_keeps_the_queue_full_while_jobs_remain(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=0.5) as sim:
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
        try:
            hot.start()
            run_jobs(hot, 6)
        finally:
            hot.stop()
        stats = sim.stats()
    assert stats["prompts_executed"] == 6
    assert stats["idle_gaps"] == 1, "the GPU went idle before the last job"
    assert stats["max_queue_remaining"] == 2  # the window: one running, one waiting


def test_websocket_dropped_mid_job_still_completes_every_job(hot, sim):
    sim.set_faults(drop_ws_after=6)
    sim.job_seconds = 0.2
    hot.start()
    sidecars = run_jobs(hot, 5)
    assert len(sidecars) == 5
    assert "server.websocket_dropped" in hot.log()


def test_no_websocket_falls_back_to_polling(tmp_path):
    with SimServer(host="127.0.0.1", port=0, job_seconds=0.05, faults=Faults(no_ws=True)) as sim:
        hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
        try:
            hot.start()
            assert len(run_jobs(hot, 4)) == 4
        finally:
            hot.stop()
    assert "server.websocket_unavailable" in hot.log()


def test_server_killed_in_a_two_server_run_its_jobs_finish_on_the_other(tmp_path):
    a = SimServer(host="127.0.0.1", port=0, job_seconds=0.3).start()
    b = SimServer(host="127.0.0.1", port=0, job_seconds=0.3).start()
    hot = multi(tmp_path, [a, b])
    hot.config["comfy"]["failover_seconds"] = 1.0
    try:
        hot.start()
        names = [f"job{i:02d}.txt" for i in range(10)]
        for name in names:
            hot.drop(name, f"prompt {name}")
        wait_for(lambda: b.stats()["prompts_received"] >= 2, what="gpu1 to get work")
        b.stop()
        wait_for(lambda: all((hot.dir("done") / n).exists() for n in names), timeout=60,
                 what="all jobs done after gpu1 died")
        servers = Counter(hot.sidecar(Path(n).stem)["server"] for n in names)
        assert servers["gpu0"] >= 8
        assert "job.moved" in hot.log() or servers["gpu1"] == 2
    finally:
        hot.stop()
        a.stop()
        b.stop()


def test_least_loaded_dispatch_across_unequal_servers(tmp_path):
    fast = SimServer(host="127.0.0.1", port=0, job_seconds=0.05).start()
    slow = SimServer(host="127.0.0.1", port=0, job_seconds=0.6).start()
    hot = multi(tmp_path, [fast, slow])
    try:
        hot.start()
        servers = Counter(s["server"] for s in run_jobs(hot, 16))
    finally:
        hot.stop()
        fast.stop()
        slow.stop()
    assert servers["gpu0"] > 3 * servers["gpu1"], servers


def test_a_server_busy_with_other_clients_gets_less(tmp_path):
    idle = SimServer(host="127.0.0.1", port=0, job_seconds=0.1).start()
    busy = SimServer(host="127.0.0.1", port=0, job_seconds=0.1).start()
    workflow = json.loads((ROOT / "config/workflows/sdxl_txt2img.json").read_text())
    busy.job_seconds = 1.0
    for seed in range(6):  # another user's queue on the second server
        workflow["3"]["inputs"]["seed"] = seed
        requests.post(f"{busy.url}/prompt", json={"prompt": workflow}, timeout=5)
    hot = multi(tmp_path, [idle, busy])
    try:
        hot.start()
        servers = Counter(s["server"] for s in run_jobs(hot, 10))
    finally:
        hot.stop()
        idle.stop()
        busy.stop()
    assert servers["gpu0"] >= 8, servers


def test_folder_pinned_to_servers_by_tag(tmp_path):
    small = SimServer(host="127.0.0.1", port=0, job_seconds=0.05).start()
    big = SimServer(host="127.0.0.1", port=0, job_seconds=0.05).start()
    hot = multi(tmp_path, [small, big], gpu0={"tags": ["small"]}, gpu1={"tags": ["big-memory"]})
    hot.config["folders"][0]["server_tags"] = ["big-memory"]
    try:
        hot.start()
        servers = Counter(s["server"] for s in run_jobs(hot, 5))
    finally:
        hot.stop()
        small.stop()
        big.stop()
    assert servers == Counter({"gpu1": 5})
    assert small.stats()["prompts_received"] == 0
