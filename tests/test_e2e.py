"""The real daemon process against the simulator, driven only through folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from harness import HotFolder, free_port, make_config, png_prompt, wait_for

from hotfolder.sim import SimServer


def outputs(hot: HotFolder, stem: str) -> list[Path]:
    return sorted(hot.dir("outbox").glob(f"{stem}_*.png"))


def test_txt_job_becomes_images_sidecar_and_done(hot):
    hot.start()
    hot.drop("fox.txt", "a photorealistic red fox in snow, golden hour lighting\n")
    assert hot.finished("fox.txt") == "done"
    images = outputs(hot, "fox")
    assert [p.name for p in images] == ["fox_00001.png"]
    sidecar = hot.sidecar("fox")
    assert sidecar["prompt"] == "a photorealistic red fox in snow, golden hour lighting"
    assert sidecar["workflow"] == "sdxl" and sidecar["server"] and sidecar["prompt_id"]
    assert isinstance(sidecar["seed"], int)
    assert sidecar["outputs"][0]["file"] == "fox_00001.png"
    assert sidecar["timings"]["total_seconds"] >= 0
    graph = png_prompt(images[0])
    assert graph["6"]["inputs"]["text"] == sidecar["prompt"]
    assert graph["3"]["inputs"]["seed"] == sidecar["seed"]  # the seed actually used
    assert graph["9"]["inputs"]["filename_prefix"].startswith("hotfolder/fox-")
    assert not hot.in_processing()
    assert not [p for p in hot.dir("outbox").iterdir() if p.name.startswith(".")]


def test_json_spec_with_set_by_id_title_and_class(hot):
    hot.start()
    spec = {"prompt": "a lighthouse", "negative": "fog", "seed": 1234, "steps": 7, "cfg": 5.5,
            "width": 512, "height": 384, "batch_size": 2, "sampler": "dpmpp_2m",
            "scheduler": "karras", "denoise": 0.9,
            "set": {"4.ckpt_name": "v1-5-pruned-emaonly.safetensors",
                    "Positive Prompt.text": "a lighthouse, overridden by title",
                    "KSampler.steps": 9}}
    hot.drop("light.json", json.dumps(spec))
    assert hot.finished("light.json") == "done"
    images = outputs(hot, "light")
    assert [p.name for p in images] == ["light_00001.png", "light_00002.png"]  # batch of 2
    graph = png_prompt(images[0])
    assert graph["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert graph["6"]["inputs"]["text"] == "a lighthouse, overridden by title"
    assert graph["7"]["inputs"]["text"] == "fog"
    k = graph["3"]["inputs"]
    assert (k["seed"], k["steps"], k["cfg"], k["sampler_name"], k["scheduler"], k["denoise"]) \
        == (1234, 9, 5.5, "dpmpp_2m", "karras", 0.9)
    assert graph["5"]["inputs"] == {"width": 512, "height": 384, "batch_size": 2}
    assert hot.sidecar("light")["seed"] == 1234


def test_yaml_spec_with_random_seed_recorded(hot):
    hot.start()
    hot.drop("cat.yaml", "prompt: a cat on a windowsill\nseed: random\nsteps: 3\n")
    assert hot.finished("cat.yaml") == "done"
    sidecar = hot.sidecar("cat")
    graph = png_prompt(outputs(hot, "cat")[0])
    assert graph["3"]["inputs"]["seed"] == sidecar["seed"]
    assert graph["3"]["inputs"]["steps"] == 3


def test_raw_api_workflow_gets_unique_prefix_and_seed_policy(hot):
    hot.config["folders"][0]["defaults"] = {"seed": "keep"}
    hot.start()
    workflow = json.loads(Path(hot.base / "workflows" / "sdxl.json").read_text())
    workflow["6"]["inputs"]["text"] = "raw workflow prompt"
    workflow["3"]["inputs"]["seed"] = 777
    hot.drop("raw.json", json.dumps(workflow))
    assert hot.finished("raw.json") == "done"
    graph = png_prompt(outputs(hot, "raw")[0])
    assert graph["6"]["inputs"]["text"] == "raw workflow prompt"
    assert graph["3"]["inputs"]["seed"] == 777  # seed: keep
    assert graph["9"]["inputs"]["filename_prefix"].startswith("hotfolder/raw-")


def test_rejected_workflow_names_node_input_and_choices(hot):
    hot.start()
    bad_ckpt = {"Load Checkpoint.ckpt_name": "sdxl_base.safetensors"}
    hot.drop("bad.json", json.dumps({"prompt": "x", "set": bad_ckpt}))
    assert hot.finished("bad.json") == "failed"
    error = hot.error("bad.json")
    message = error["error"]
    assert "node 4" in message and "Load Checkpoint" in message
    assert "ckpt_name" in message and "sdxl_base.safetensors" in message
    assert "sd_xl_base_1.0.safetensors" in message  # the closest valid choice
    assert not outputs(hot, "bad")


def test_node_execution_error_lands_in_failed_and_daemon_goes_on(hot, sim):
    sim.faults.fail_next = 1
    hot.start()
    hot.drop("boom.txt", "this one raises inside a node")
    assert hot.finished("boom.txt") == "failed"
    error = hot.error("boom.txt")
    assert error["kind"] == "execution_error"
    assert "node" in error["error"] and error["prompt_id"]
    hot.drop("after.txt", "the daemon keeps running")
    assert hot.finished("after.txt") == "done"


def test_unknown_template_and_unknown_field(hot):
    hot.start()
    hot.drop("which.json", json.dumps({"prompt": "x", "workflow": "flux"}))
    hot.drop("typo.yaml", "prompt: x\nstepz: 3\n")
    assert hot.finished("which.json") == "failed"
    assert "unknown workflow template 'flux'" in hot.error("which.json")["error"]
    assert hot.finished("typo.yaml") == "failed"
    assert "'stepz'" in hot.error("typo.yaml")["error"]


def test_resubmitted_identical_job_delivers_its_own_images(hot):
    hot.start()
    body = json.dumps({"prompt": "same every time", "seed": 42})
    hot.drop("same.json", body)
    assert hot.finished("same.json") == "done"
    hot.drop("same.json", body)
    assert hot.finished("same-2.json") == "done"
    first, second = hot.dir("outbox") / "same_00001.png", hot.dir("outbox") / "same-2_00001.png"
    assert first.exists() and second.exists()
    assert hot.sidecar("same")["prompt_id"] != hot.sidecar("same-2")["prompt_id"]
    assert png_prompt(first)["9"]["inputs"]["filename_prefix"] != \
        png_prompt(second)["9"]["inputs"]["filename_prefix"]


def test_name_clash_in_failed_gets_a_suffix(hot):
    hot.start()
    hot.drop("dup.json", "{", stale=True)
    assert hot.finished("dup.json") == "failed"
    hot.drop("dup.json", "{ still broken", stale=True)
    assert hot.finished("dup-2.json") == "failed"
    assert (hot.dir("failed") / "dup.error.json").exists()
    assert (hot.dir("failed") / "dup-2.error.json").exists()


def test_server_down_then_up_job_waits_then_succeeds(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hot = HotFolder(base=tmp_path, server_url=url, config=make_config(tmp_path, url))
    hot.start()
    try:
        hot.drop("patient.txt", "waits for the server")
        wait_for(lambda: "server.unreachable" in hot.log() or "server.waiting" in hot.log(),
                 what="the daemon to report the server unreachable")
        wait_for(lambda: not (hot.dir("inbox") / "patient.txt").exists()
                 or "job.detected" in hot.log(), what="the job to be seen")
        assert not (hot.dir("failed") / "patient.txt").exists()
        sim = SimServer(host="127.0.0.1", port=port, job_seconds=0.05)
        sim.start()
        try:
            assert hot.finished("patient.txt") == "done"
            assert outputs(hot, "patient")
        finally:
            sim.stop()
    finally:
        hot.stop()


def test_per_job_time_limit(tmp_path):
    sim = SimServer(host="127.0.0.1", port=0, job_seconds=30)
    sim.start()
    hot = HotFolder(base=tmp_path, server_url=sim.url,
                    config=make_config(tmp_path, sim.url, job_timeout=1.0))
    try:
        hot.start()
        hot.drop("slow.txt", "takes forever")
        assert hot.finished("slow.txt", timeout=20) == "failed"
        error = hot.error("slow.txt")
        assert error["kind"] == "timeout" and "did not finish within 1 seconds" in error["error"]
    finally:
        hot.stop()
        sim.stop()


def test_5xx_is_retried_then_fails_with_the_servers_text(hot, sim):
    sim.faults.http_5xx_next = 1
    hot.start()
    hot.drop("flaky.txt", "one 500 then fine")
    assert hot.finished("flaky.txt") == "done"
    sim.faults.http_5xx_rate = 1.0
    hot.drop("broken.txt", "always 500")
    assert hot.finished("broken.txt") == "failed"
    error = hot.error("broken.txt")
    assert "Server got itself in trouble" in error["error"]


def test_unsupported_extension_is_left_in_place_and_daemon_exits_zero(hot):
    hot.start()
    hot.drop("notes.md", "not a job")
    hot.drop("ok.txt", "a job")
    assert hot.finished("ok.txt") == "done"
    assert (hot.dir("inbox") / "notes.md").exists()
    assert hot.stop() == 0


def _preview_and_save(save: bool) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    if save:
        nodes["3"] = {"class_type": "SaveImage",
                      "inputs": {"images": ["1", 0], "filename_prefix": "x"}}
    return nodes


def test_temp_outputs_are_skipped_unless_asked_and_no_output_fails(hot):
    hot.start()
    hot.drop("both.json", json.dumps(_preview_and_save(save=True)))
    hot.drop("preview.json", json.dumps(_preview_and_save(save=False)))
    assert hot.finished("both.json") == "done"
    assert [o["type"] for o in hot.sidecar("both")["outputs"]] == ["output"]
    assert hot.finished("preview.json") == "failed"
    assert "produced no output" in hot.error("preview.json")["error"]


def test_temp_outputs_delivered_when_the_folder_asks(hot):
    hot.config["folders"][0]["include_temp_outputs"] = True
    hot.start()
    hot.drop("both.json", json.dumps(_preview_and_save(save=True)))
    assert hot.finished("both.json") == "done"
    assert sorted(o["type"] for o in hot.sidecar("both")["outputs"]) == ["output", "temp"]
    assert len(list(hot.dir("outbox").glob("both_*.png"))) == 2


def test_history_entry_deleted_when_configured(hot, sim):
    hot.config["comfy"]["delete_history"] = True
    hot.start()
    hot.drop("tidy.txt", "leave no trace on the server")
    assert hot.finished("tidy.txt") == "done"
    prompt_id = hot.sidecar("tidy")["prompt_id"]
    history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json()
    assert history == {}


def test_unreadable_file_fails_clearly(hot):
    hot.start()
    hot.drop("latin1.txt", "caf\xe9".encode("latin-1"), stale=True)
    assert hot.finished("latin1.txt") == "failed"
    assert "not UTF-8" in hot.error("latin1.txt")["error"]
