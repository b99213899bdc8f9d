"""check.py against the real /object_info of the ComfyUI 0.3.64 server in the captures."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hotfolder.workflow import check
from hotfolder.workflow.check import check_workflow, closest

FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api"
OBJECT_INFO = json.loads((FIXTURES / "object_info_full.json").read_text(encoding="utf-8"))
WORKFLOWS = sorted((FIXTURES / "workflows").glob("*.json"))


def _workflow(name: str = "txt2img_tiny_sd15") -> dict[str, Any]:
    return json.loads((FIXTURES / "workflows" / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_recorded_workflows_have_no_problems(path: Path) -> None:
    # All of these ran on the server; tiny-random-sd15 is in its checkpoint list, and LoadImage's
    # "hotfolder-jobs/job_input.png" is checked by the node itself, not against the list.
    assert check_workflow(json.loads(path.read_text(encoding="utf-8")), OBJECT_INFO) == []


def test_per_class_object_info_files_are_enough() -> None:
    per_class: dict[str, Any] = {}
    for path in (FIXTURES / "object_info").glob("*.json"):
        per_class.update(json.loads(path.read_text(encoding="utf-8")).get("response_json") or {})
    for path in WORKFLOWS:
        assert check_workflow(json.loads(path.read_text(encoding="utf-8")), per_class) == []


def test_tutorial_class_name_suggests_the_real_one() -> None:
    workflow = _workflow()
    workflow["4"]["class_type"] = "CheckpointSimple"
    (problem,) = check_workflow(workflow, OBJECT_INFO, name="workflows.txt2img")
    assert problem.startswith("workflows.txt2img: node 4 'Load Checkpoint' (CheckpointSimple): ")
    assert "does not exist on this server" in problem
    assert "Did you mean 'CheckpointLoaderSimple'?" in problem


def test_a_missing_class_is_never_offered_its_opposite_or_a_misfit() -> None:
    workflow = _workflow()
    workflow["10"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["8", 0], "vae": ["4", 2]}}
    without = {k: v for k, v in OBJECT_INFO.items() if k != "VAEEncode"}
    (problem,) = check_workflow(workflow, without)
    assert "class_type 'VAEEncode' does not exist on this server. Did you mean " \
           "'VAEEncodeTiled'?" in problem
    assert "VAEDecode" not in problem
    only_decode = {k: v for k, v in without.items() if not k.startswith("VAEEncode")}
    (problem,) = check_workflow(workflow, only_decode)
    assert problem.endswith("does not exist on this server. Is a custom node missing?")


def test_bad_sampler_name_lists_closest_choices() -> None:
    workflow = _workflow()
    workflow["3"]["inputs"]["sampler_name"] = "euler_bogus"
    (problem,) = check_workflow(workflow, OBJECT_INFO)
    assert problem.startswith("workflow: node 3 (KSampler), input sampler_name: 'euler_bogus'")
    assert "is not one of the server's choices; did you mean 'euler'? Also close: " \
           "'euler_cfg_pp'." in problem


def test_checkpoint_not_on_server_lists_the_choices() -> None:
    workflow = _workflow()
    workflow["4"]["inputs"]["ckpt_name"] = "v1-5-pruned-emaonly.safetensors"
    (problem,) = check_workflow(workflow, OBJECT_INFO)
    assert "'tiny-random-sd15.safetensors'" in problem


def test_int_above_max_and_below_min() -> None:
    workflow = _workflow()
    workflow["5"]["inputs"]["width"] = 99999
    workflow["3"]["inputs"]["steps"] = 0
    problems = check_workflow(workflow, OBJECT_INFO)
    assert ("workflow: node 5 'Empty Latent Image' (EmptyLatentImage), input width: 99999 is "
            "above the maximum of 16384.") in problems
    assert "workflow: node 3 (KSampler), input steps: 0 is below the minimum of 1." in problems


def test_literal_types_follow_comfyui_conversions() -> None:
    workflow = _workflow()
    workflow["3"]["inputs"]["cfg"] = "7.5"  # ComfyUI accepts this (float("7.5"))
    workflow["3"]["inputs"]["seed"] = "42"
    assert check_workflow(workflow, OBJECT_INFO) == []
    workflow["3"]["inputs"]["steps"] = "four"
    workflow["3"]["inputs"]["denoise"] = None
    problems = check_workflow(workflow, OBJECT_INFO)
    assert "workflow: node 3 (KSampler), input steps: 'four' is not a valid INT." in problems
    assert "workflow: node 3 (KSampler), input denoise: None is not a valid FLOAT." in problems
    workflow = _workflow()
    workflow["3"]["inputs"]["steps"] = 7.5
    (problem,) = check_workflow(workflow, OBJECT_INFO)
    assert "not a whole number" in problem


def test_missing_required_input() -> None:
    workflow = _workflow()
    del workflow["3"]["inputs"]["seed"]
    assert check_workflow(workflow, OBJECT_INFO) == [
        "workflow: node 3 (KSampler): required input seed is missing."]


def test_link_to_missing_node() -> None:
    workflow = _workflow()
    workflow["3"]["inputs"]["model"] = ["99", 0]
    assert check_workflow(workflow, OBJECT_INFO) == [
        "workflow: node 3 (KSampler), input model is linked to node 99, which is not in the "
        "workflow."]


def test_link_with_int_node_id() -> None:
    workflow = _workflow()
    workflow["3"]["inputs"]["model"] = [4, 0]
    (problem,) = check_workflow(workflow, OBJECT_INFO)
    assert "written as a number" in problem and '["4", 0]' in problem


def test_link_slot_out_of_range() -> None:
    workflow = _workflow()
    workflow["3"]["inputs"]["model"] = ["4", 7]
    assert check_workflow(workflow, OBJECT_INFO) == [
        "workflow: node 3 (KSampler), input model is linked to output 7 of node 4 "
        "'Load Checkpoint' (CheckpointLoaderSimple), which has 3 outputs (0 MODEL, 1 CLIP, "
        "2 VAE)."]


def test_link_type_mismatch() -> None:
    workflow = _workflow()
    workflow["8"]["inputs"]["samples"] = ["4", 0]
    (problem,) = check_workflow(workflow, OBJECT_INFO)
    assert problem == ("workflow: node 8 'VAE Decode' (VAEDecode), input samples expects LATENT "
                       "but is linked to output 0 of node 4 'Load Checkpoint' "
                       "(CheckpointLoaderSimple), which gives MODEL.")


def test_wildcard_and_union_types_match() -> None:
    workflow = _workflow("string_patch")  # PreviewAny.source is "*"
    workflow["4"]["inputs"]["source"] = ["5", 0]  # an IMAGE into "*"
    assert check_workflow(workflow, OBJECT_INFO) == []
    info = copy.deepcopy(OBJECT_INFO)
    info["PreviewAny"]["input"]["required"]["source"] = ["IMAGE,MASK", {}]
    assert check_workflow(workflow, info) == []
    info["PreviewAny"]["input"]["required"]["source"] = ["LATENT,MASK", {}]
    assert "expects LATENT,MASK" in check_workflow(workflow, info)[0]


def test_newer_combo_format_and_combo_links() -> None:
    info = copy.deepcopy(OBJECT_INFO)
    sampler = info["KSampler"]["input"]["required"]
    sampler["sampler_name"] = ["COMBO", {"options": ["euler", "heun"]}]
    info["SamplerName"] = {"input": {"required": {}}, "output": [["euler", "heun"]],
                           "output_node": False}
    workflow = _workflow()
    assert check_workflow(workflow, info) == []
    workflow["3"]["inputs"]["sampler_name"] = "Heun"
    (problem,) = check_workflow(workflow, info)
    assert "did you mean 'heun'?" in problem
    workflow["10"] = {"class_type": "SamplerName", "inputs": {}}
    workflow["3"]["inputs"]["sampler_name"] = ["10", 0]  # a combo-typed link is fine
    assert check_workflow(workflow, info) == []
    workflow["3"]["inputs"]["sampler_name"] = ["5", 0]  # LATENT into a combo is not
    assert "expects COMBO but is linked" in check_workflow(workflow, info)[0]


def test_no_output_node() -> None:
    workflow = {"1": {"class_type": "EmptyImage",
                      "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    assert check_workflow(workflow, OBJECT_INFO, name="t") == [
        "t: has no output node (such as SaveImage or PreviewImage), so ComfyUI would refuse to "
        "run it."]


def test_unknown_input_is_reported_unless_disabled() -> None:
    workflow = _workflow()
    workflow["3"]["inputs"]["denoize"] = 0.5
    (problem,) = check_workflow(workflow, OBJECT_INFO)
    assert problem == ("workflow: node 3 (KSampler), input denoize: KSampler has no such input, "
                       "so ComfyUI would ignore it. Did you mean denoise?")
    assert check_workflow(workflow, OBJECT_INFO, unknown_inputs=False) == []
    workflow = _workflow("empty_image_save")
    workflow["2"]["inputs"]["prompt"] = {}  # a hidden input: ComfyUI fills it, no complaint
    assert check_workflow(workflow, OBJECT_INFO) == []


def test_literal_where_a_link_is_needed_and_boolean_strings() -> None:
    workflow = _workflow()
    workflow["3"]["inputs"]["model"] = "tiny-random-sd15.safetensors"
    (problem,) = check_workflow(workflow, OBJECT_INFO)
    assert "input model expects a link from a MODEL output" in problem
    info = copy.deepcopy(OBJECT_INFO)
    info["EmptyImage"]["input"]["optional"] = {"flip": ["BOOLEAN", {"default": False}]}
    workflow = _workflow("empty_image_save")
    workflow["1"]["inputs"]["flip"] = "false"
    (problem,) = check_workflow(workflow, info)
    assert "turns any non-empty string into True" in problem


def test_whole_file_shape_problems() -> None:
    assert check_workflow([], OBJECT_INFO, name="w") == [  # type: ignore[arg-type]
        'w: is not a JSON object of nodes (API format: {"<id>": {"class_type", ...}}).']
    assert check_workflow({}, OBJECT_INFO, name="w") == ["w: has no nodes."]
    (problem,) = check_workflow({"nodes": [], "links": []}, OBJECT_INFO, name="w")
    assert "Export (API)" in problem
    problems = check_workflow({"1": "x", "2": {"inputs": {}}}, OBJECT_INFO, name="w")
    assert problems == ["w: node 1 is not a node (expected an object with class_type and inputs).",
                        "w: node 2 has no class_type, so ComfyUI cannot tell what kind of node "
                        "it is."]


def test_class_suggestions_are_shared() -> None:
    """check, the rejection explainer and the GUI converter offer the same classes."""
    from hotfolder.comfy import explain
    from hotfolder.workflow.gui2api import convert

    assert check.nearest_classes is explain.nearest_classes is convert.nearest_classes
    assert closest("CheckpointSimple", OBJECT_INFO)[0] == "CheckpointLoaderSimple"
