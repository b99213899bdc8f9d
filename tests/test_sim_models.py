"""The simulator's model-loading cost: which files a prompt needs, when it loads, the run log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from simtools import OPEN, wait_until

from hotfolder.sim import SimServer
from hotfolder.sim.cli import build_parser
from hotfolder.sim.models import ModelMemory, models_needed

WORKFLOWS = Path(__file__).parent / "fixtures" / "comfy-api" / "workflows"
TINY, OTHER = "tiny-random-sd15.safetensors", "v1-5-pruned-emaonly.safetensors"


def txt2img(ckpt: str, seed: int) -> dict[str, Any]:
    prompt = json.loads((WORKFLOWS / "txt2img_tiny_sd15.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = ckpt
    prompt["3"]["inputs"]["seed"] = seed
    return prompt


def test_loader_inputs_on_the_path_to_an_output_are_the_models() -> None:
    prompt = txt2img(TINY, 1)
    prompt["10"] = {"class_type": "LoraLoader", "inputs": {
        "lora_name": "add-detail-xl.safetensors", "model": ["4", 0], "clip": ["4", 1],
        "strength_model": 1.0, "strength_clip": 1.0}}
    prompt["3"]["inputs"]["model"] = ["10", 0]
    prompt["11"] = {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors"}}
    prompt["12"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sdxl_vae.safetensors"}}
    prompt["8"]["inputs"]["vae"] = ["12", 0]
    needed = models_needed(prompt, ["9"])
    # node 11 feeds no output: it would not run, so it loads nothing
    assert needed == {TINY, "add-detail-xl.safetensors", "sdxl_vae.safetensors"}
    prompt["6"]["inputs"]["clip"] = ["11", 0]
    assert "t5xxl_fp16.safetensors" in models_needed(prompt, ["9"])


def test_model_inputs_count_only_on_loaders_and_hostile_graphs_end() -> None:
    assert models_needed({"1": {"class_type": "SaveImage", "inputs": {
        "model_name": "x", "images": ["2", 0]}}, "2": {"class_type": "EmptyImage"}}, ["1"]) == set()
    looped = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {
        "ckpt_name": TINY, "x": ["1", 0]}}}
    assert models_needed(looped, ["1", "missing", 7]) == {TINY}  # type: ignore[list-item]


def test_memory_loads_only_a_different_non_empty_set() -> None:
    memory = ModelMemory(3.0)
    a, b = frozenset({TINY}), frozenset({OTHER})
    assert memory.begin(a) == 3.0
    memory.loaded_now(a, 3.0)
    assert memory.begin(a) is None
    assert memory.begin(frozenset()) is None  # needs nothing: keeps what is loaded
    assert memory.begin(b) == 3.0
    assert memory.counters() == {"model_loads": 2, "model_load_seconds_spent": 3.0,
                                 "loaded_models": []}  # b's load never finished


def test_switching_checkpoints_costs_a_load_each_time(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(job_seconds=0.01, model_load_seconds=0.2)
    session = requests.Session()
    OPEN.append(session)
    ids = []
    for seed, ckpt in enumerate([TINY, TINY, OTHER, TINY]):
        answer = session.post(f"{sim.url}/prompt", json={"prompt": txt2img(ckpt, seed)},
                              timeout=10)
        ids.append(answer.json()["prompt_id"])
    wait_until(lambda: len(session.get(f"{sim.url}/sim/runs", timeout=10).json()["runs"]) == 4,
               "four runs")
    runs = session.get(f"{sim.url}/sim/runs", timeout=10).json()
    assert [r["prompt_id"] for r in runs["runs"]] == ids
    assert [(r["models"], r["model_load"]) for r in runs["runs"]] == [
        ([TINY], True), ([TINY], False), ([OTHER], True), ([TINY], True)]
    assert (runs["model_loads"], runs["model_load_seconds"], runs["loaded_models"]) == (
        3, 0.2, [TINY])
    loading = runs["runs"][2]
    assert loading["finished_at"] - loading["started_at"] >= 0.2 - 0.05  # _spend's slack
    stats = session.get(f"{sim.url}/sim/stats", timeout=10).json()
    assert (stats["model_loads"], stats["model_load_seconds_spent"]) == (3, 0.6)
    # POST /free with unload_models empties the GPU: the same checkpoint loads again
    assert session.post(f"{sim.url}/free", json={"unload_models": True}, timeout=10).ok
    sim.model_load_seconds = 0
    session.post(f"{sim.url}/prompt", json={"prompt": txt2img(TINY, 9)}, timeout=10)
    wait_until(lambda: sim.stats()["prompts_executed"] == 5, "the fifth run")
    assert sim.engine.models.report()["runs"][-1]["model_load"] is True
    assert sim.stats()["model_loads"] == 4


def test_an_interrupted_load_leaves_nothing_loaded(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(job_seconds=0.01, model_load_seconds=60)
    session = requests.Session()
    OPEN.append(session)
    first = session.post(f"{sim.url}/prompt", json={"prompt": txt2img(TINY, 1)},
                         timeout=10).json()["prompt_id"]
    wait_until(lambda: sim.stats()["model_loads"] == 1, "the load to begin")
    session.post(f"{sim.url}/interrupt", json={}, timeout=10)
    entry = wait_until(lambda: session.get(f"{sim.url}/history/{first}", timeout=10).json(),
                       "the interrupted run's history")[first]
    assert entry["status"]["status_str"] == "error"
    assert sim.engine.models.report()["loaded_models"] == []
    assert sim.engine.models.report()["runs"][0]["success"] is False


def test_the_command_line_sets_the_load_time() -> None:
    assert build_parser().parse_args([]).model_load_seconds == 0.0
    assert build_parser().parse_args(["--model-load-seconds", "3"]).model_load_seconds == 3.0
