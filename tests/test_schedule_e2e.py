"""Model-aware dispatch end to end: one server, one slot, jobs of two checkpoints dropped
alternately while the server is away, so every job waits when the choice is made."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import requests
from harness import TEMPLATE, HotFolder, free_port, wait_for

from hotfolder.sim import SimServer

REFINER = "sd_xl_refiner_1.0.safetensors"


def _config(tmp_path: Path, port: int, http_port: int) -> dict:
    workflows = tmp_path / "workflows"
    workflows.mkdir(exist_ok=True)
    shutil.copy(TEMPLATE, workflows / "base.json")
    refiner = json.loads(TEMPLATE.read_text())
    refiner["4"]["inputs"]["ckpt_name"] = REFINER
    (workflows / "refiner.json").write_text(json.dumps(refiner))
    folder = {"settle_seconds": 0.2}
    return {
        "servers": [{"url": f"http://127.0.0.1:{port}", "name": "gpu"}],
        "comfy": {"poll_interval": 0.2, "backoff_initial": 0.1, "backoff_max": 0.3,
                  "request_timeout": 5, "max_in_flight": 1},
        "workflows": {"base": "workflows/base.json", "refiner": "workflows/refiner.json"},
        "folders": [
            {"name": "base", "root": "base", "workflow": "base",
             "limits": {"max_priority": 5}, **folder},
            {"name": "refiner", "root": "refiner", "workflow": "refiner", **folder},
            {"name": "rush", "root": "rush", "workflow": "refiner", "priority": 5, **folder},
        ],
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "log": {"level": "debug", "format": "json"},
    }


def _drop(hot: HotFolder, folder: str, name: str, content: str) -> None:
    """Dropped, then seen ready by the daemon before the next one: drop order is known."""
    inbox = hot.base / folder / "inbox"
    (inbox / f".{name}.part").write_text(content)
    (inbox / f".{name}.part").rename(inbox / name)
    wait_for(lambda: any(e.get("event") == "job.ready" and e.get("file") == name
                         and e.get("folder") == folder for e in hot.events()),
             what=f"{name} ready")


def _run_order(hot: HotFolder, sim: SimServer, jobs: list[tuple[str, str]]) -> list[dict]:
    """Start the server, wait for every job, return their sidecars in the order they ran."""
    sim.start()
    wait_for(lambda: all((hot.base / f / "done" / n).exists() for f, n in jobs), timeout=60,
             what=f"every job done\n{hot.log()[-3000:]}")
    sidecars = {json.loads((hot.base / f / "outbox" / f"{Path(n).stem}.json").read_text())
                ["prompt_id"]: n for f, n in jobs}
    by_id = {n: json.loads((hot.base / f / "outbox" / f"{Path(n).stem}.json").read_text())
             for f, n in jobs}
    with sim.engine.mutex:
        ran = [sidecars[p] for p in sim.engine.history if p in sidecars]
    return [by_id[n] | {"name": n} for n in ran]


def test_models_then_drop_order_priorities_first_and_fifo_keeps_drop_order(tmp_path):
    port, http_port = free_port(), free_port()
    hot = HotFolder(base=tmp_path, server_url="", config=_config(tmp_path, port, http_port))
    sim = SimServer(host="127.0.0.1", port=port, job_seconds=0.05)
    hot.start()
    try:
        jobs = []
        for i in range(3):
            for folder in ("base", "refiner"):
                _drop(hot, folder, f"{folder}{i}.txt", f"a lighthouse, take {i}")
                jobs.append((folder, f"{folder}{i}.txt"))
        _drop(hot, "base", "urgent.json", json.dumps({"prompt": "now", "priority": 3}))
        _drop(hot, "base", "toohigh.json", json.dumps({"prompt": "x", "priority": 9}))
        _drop(hot, "rush", "rush.txt", "the client is waiting")
        jobs += [("base", "urgent.json"), ("rush", "rush.txt")]
        ran = _run_order(hot, sim, jobs)
        # priority first (rush 5, then urgent 3+0), then the models the server has loaded,
        # then drop order
        assert [s["name"] for s in ran] == ["rush.txt", "urgent.json", "base0.txt", "base1.txt",
                                            "base2.txt", "refiner0.txt", "refiner1.txt",
                                            "refiner2.txt"]
        assert [s["model_switch"] for s in ran] == [None, True, False, False, False, True,
                                                    False, False]
        assert ran[0]["models"] == [REFINER] and ran[0]["priority"] == 5
        assert "priority" not in ran[2]
        assert (tmp_path / "base/failed/toohigh.json").exists()
        error = json.loads((tmp_path / "base/failed/toohigh.error.json").read_text())
        assert "limits.max_priority" in error["error"]

        def status() -> dict | None:  # the daemon writes its live status about once a second
            doc = json.loads(subprocess.run(
                [sys.executable, "-m", "hotfolder", "status", "--json", "--config",
                 str(hot.config_path)], capture_output=True, text=True, check=True,
                timeout=30).stdout)
            return doc if doc["servers"][0]["models"] == [REFINER] else None

        doc = wait_for(status, what="the server's models in the status")
        assert doc["servers"][0]["model_switches"] == 2
        done = {d["job"]: d for d in doc["folders"][1]["recent_done"]}
        assert done["refiner0.txt"]["model_switch"] is True
        assert done["refiner0.txt"]["server"] == "gpu"
        metrics = requests.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
        assert 'hotfolder_model_switches_total{server="gpu"} 2.0' in metrics
    finally:
        hot.stop()
        sim.stop()

    # the same drops with schedule: fifo run in drop order, switching at every job
    port = free_port()
    hot.config = _config(tmp_path, port, free_port()) | {"schedule": "fifo"}
    sim = SimServer(host="127.0.0.1", port=port, job_seconds=0.05)
    hot.start()
    try:
        jobs = []
        for i in range(2):
            for folder in ("base", "refiner"):
                _drop(hot, folder, f"fifo-{folder}{i}.txt", f"a harbour, take {i}")
                jobs.append((folder, f"fifo-{folder}{i}.txt"))
        ran = _run_order(hot, sim, jobs)
        assert [s["name"] for s in ran] == [n for _, n in jobs]
        assert [s["model_switch"] for s in ran] == [None, True, True, True]
    finally:
        hot.stop()
        sim.stop()


def test_files_ready_moments_apart_still_put_each_idle_server_on_one_model(tmp_path):
    """Two idle servers, two folders: the first folder's files become ready before the
    second's are even dropped. Handing them out at once would put both servers on the first
    folder's checkpoint (both to switch later); the scheduler holds a model load back for
    `switch_wait_seconds`, so each server takes one folder's jobs."""
    ports = [free_port(), free_port()]
    config = _config(tmp_path, ports[0], free_port())
    config["servers"] = [{"url": f"http://127.0.0.1:{p}", "name": f"gpu{i}"}
                         for i, p in enumerate(ports)]
    config["comfy"]["max_in_flight"] = 2
    config["schedule"] = {"switch_wait_seconds": 1.5}
    hot = HotFolder(base=tmp_path, server_url="", config=config)
    sims = [SimServer(host="127.0.0.1", port=p, job_seconds=0.2) for p in ports]
    for sim in sims:
        sim.start()
    hot.start()
    try:
        jobs = [(folder, f"{folder}{i}.txt") for folder in ("base", "refiner") for i in range(4)]
        for folder, name in jobs:  # each seen ready before the next is dropped
            _drop(hot, folder, name, f"a lighthouse, {name}")
        wait_for(lambda: all((hot.base / f / "done" / n).exists() for f, n in jobs),
                 timeout=60, what=f"every job done\n{hot.log()[-3000:]}")
        folders_by_server: dict[str, set[str]] = {}
        for folder, name in jobs:
            car = json.loads((hot.base / folder / "outbox" / f"{Path(name).stem}.json")
                             .read_text())
            folders_by_server.setdefault(car["server"], set()).add(folder)
        assert sorted(folders_by_server.values(), key=sorted) == [{"base"}, {"refiner"}]
    finally:
        hot.stop()
        for sim in sims:
            sim.stop()
