"""GUI-format workflows through the real daemon and the simulator: dropped as jobs, or as a
folder's template; converted with the server's node definitions, or failed with a reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from harness import HotFolder, free_port, make_config, wait_for
from test_e2e import outputs, png_prompt

from hotfolder.sim import SimServer

GUI = json.loads((Path(__file__).parent / "fixtures" / "gui2api" / "image_sdxl_simple"
                  / "gui.json").read_text("utf-8"))  # a real save from ComfyUI's editor
POSITIVE = GUI["nodes"][1]["widgets_values"][0]


def gui_with(node_id: int, **changes: Any) -> dict[str, Any]:
    gui = copy.deepcopy(GUI)
    next(n for n in gui["nodes"] if n["id"] == node_id).update(changes)
    return gui


def test_dropped_gui_workflow_runs_and_the_sidecar_says_it_was_converted(hot):
    hot.start()
    hot.drop("statue.json", json.dumps(GUI))
    assert hot.finished("statue.json") == "done"
    sidecar = hot.sidecar("statue")
    assert sidecar["converted_from"] == "gui"
    assert sidecar["converted_with"] == sidecar["server"]
    assert sidecar["prompt"] == POSITIVE
    graph = png_prompt(outputs(hot, "statue")[0])
    assert sorted(graph, key=int) == ["7", "10", "11", "12", "13", "14", "15"]  # no note
    assert graph["10"]["inputs"]["text"] == POSITIVE
    k = graph["12"]["inputs"]
    assert (k["steps"], k["cfg"], k["sampler_name"], k["scheduler"]) == (25, 7, "dpmpp_2m",
                                                                         "karras")
    assert k["seed"] == sidecar["seed"]  # the folder's seed policy applies, as for API jobs
    assert k["model"] == ["15", 0] and "control_after_generate" not in k
    assert graph["7"]["inputs"]["filename_prefix"].startswith("hotfolder/statue-")


def test_gui_workflow_with_an_unknown_node_type_fails_naming_it(hot):
    hot.start()
    hot.drop("custom.json", json.dumps(gui_with(15, type="CheckpointLoaderSimpel",
                                                title="My checkpoint")))
    assert hot.finished("custom.json") == "failed"
    error = hot.error("custom.json")
    assert error["kind"] == "conversion"
    assert "node 15 'My checkpoint' (CheckpointLoaderSimpel) is a node type this server does " \
           "not have (closest: CheckpointLoaderSimple" in error["error"]
    assert not outputs(hot, "custom")


def test_gui_template_takes_prompt_jobs(tmp_path, sim):
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "statue_gui.json").write_text(json.dumps(GUI))
    config = make_config(tmp_path, sim.url)
    config["workflows"] = {"statue": "workflows/statue_gui.json"}
    config["folders"][0]["workflow"] = "statue"
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    try:
        hot.start()
        hot.drop("owl.txt", "a snowy owl on a fence post")
        hot.drop("barn.yaml", "prompt: a barn owl\nsteps: 4\nnegative: blur\n")
        assert hot.finished("owl.txt") == "done"
        assert hot.finished("barn.yaml") == "done"
        assert hot.sidecar("owl")["converted_from"] == "gui"
        graph = png_prompt(outputs(hot, "owl")[0])
        assert graph["10"]["inputs"]["text"] == "a snowy owl on a fence post"
        graph = png_prompt(outputs(hot, "barn")[0])
        assert graph["10"]["inputs"]["text"] == "a barn owl"
        assert graph["11"]["inputs"]["text"] == "blur"
        assert graph["12"]["inputs"]["steps"] == 4
    finally:
        hot.stop()


def test_gui_job_waits_while_no_server_can_give_node_definitions(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hot = HotFolder(base=tmp_path, server_url=url, config=make_config(tmp_path, url))
    hot.start()
    try:
        hot.drop("patient.json", json.dumps(GUI))
        wait_for(lambda: "server.unreachable" in hot.log(),
                 what="the daemon to find the server unreachable")
        assert not (hot.dir("failed") / "patient.json").exists()
        sim = SimServer(host="127.0.0.1", port=port, job_seconds=0.05)
        sim.start()
        try:
            assert hot.finished("patient.json") == "done"
            assert hot.sidecar("patient")["converted_from"] == "gui"
        finally:
            sim.stop()
    finally:
        hot.stop()
