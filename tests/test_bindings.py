"""Where fields go in a template, and patching that never touches the cached template."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hotfolder.errors import JobError
from hotfolder.workflow.bindings import find_bindings, patch_workflow

ROOT = Path(__file__).resolve().parents[1]
SDXL = json.loads((ROOT / "config/workflows/sdxl_txt2img.json").read_text())
FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api" / "workflows"


def patch(values=None, sets=None, base=SDXL, overrides=None, optional=()):
    return patch_workflow(base, template_name="sdxl", overrides=overrides or {},
                          values=values or {}, sets=sets or {}, optional=optional)


def test_sdxl_bindings_are_found_from_the_graph():
    b = find_bindings(SDXL)
    assert b["prompt"] == [("6", "text")]
    assert b["negative"] == [("7", "text")]
    assert b["seed"] == [("3", "seed")]
    assert b["width"] == [("5", "width")] and b["batch_size"] == [("5", "batch_size")]
    assert b["sampler"] == [("3", "sampler_name")]
    assert b["filename_prefix"] == [("9", "filename_prefix")]


def test_shipped_template_matches_the_package_copy():
    packaged = json.loads((ROOT / "hotfolder/templates/sdxl_txt2img.json").read_text())
    assert packaged == SDXL
    assert SDXL["4"]["class_type"] == "CheckpointLoaderSimple"


def test_patch_writes_values_and_leaves_the_template_alone():
    before = copy.deepcopy(SDXL)
    wf = patch({"prompt": "fox", "negative": "blur", "seed": 5, "steps": 12, "cfg": 4.5,
                "width": 640, "height": 480, "batch_size": 2, "sampler": "dpmpp_2m",
                "scheduler": "karras", "denoise": 0.5, "filename_prefix": "hotfolder/fox-1"})
    assert before == SDXL
    assert wf["6"]["inputs"]["text"] == "fox" and wf["7"]["inputs"]["text"] == "blur"
    assert wf["3"]["inputs"] | {} == {**SDXL["3"]["inputs"], "seed": 5, "steps": 12, "cfg": 4.5,
                                      "sampler_name": "dpmpp_2m", "scheduler": "karras",
                                      "denoise": 0.5}
    assert wf["5"]["inputs"] == {"width": 640, "height": 480, "batch_size": 2}
    assert wf["9"]["inputs"]["filename_prefix"] == "hotfolder/fox-1"


@pytest.mark.parametrize("target", ["3.steps", "KSampler.steps"])
def test_set_by_id_or_unique_class(target):
    assert patch(sets={target: 44})["3"]["inputs"]["steps"] == 44


def test_set_by_title():
    assert patch(sets={"Positive Prompt.text": "hi"})["6"]["inputs"]["text"] == "hi"


def test_set_on_a_class_that_occurs_twice_is_ambiguous():
    with pytest.raises(JobError, match="2 CLIPTextEncode nodes"):
        patch(sets={"CLIPTextEncode.text": "x"})


def test_set_unknown_node_or_input_lists_what_exists():
    with pytest.raises(JobError, match="no node with id, title or class 'Nope'"):
        patch(sets={"Nope.x": 1})
    with pytest.raises(JobError, match="has no input 'stepz'; its inputs are: seed, steps"):
        patch(sets={"KSampler.stepz": 1})


def test_set_on_a_linked_input_is_refused():
    with pytest.raises(JobError, match="connected to node 4"):
        patch(sets={"KSampler.model": "x"})


def test_field_without_a_place_names_field_and_template():
    wf = json.loads((FIXTURES / "empty_image_save.json").read_text())
    with pytest.raises(JobError, match="template 'sdxl' has no place for the field 'prompt'"):
        patch({"prompt": "x"}, base=wf)
    assert patch({"seed": 1}, base=wf, optional={"seed"}) == wf


def test_binding_override():
    wf = patch({"prompt": "p"}, overrides={"prompt": ["Negative Prompt.text"]})
    assert wf["7"]["inputs"]["text"] == "p"
    assert wf["6"]["inputs"]["text"] == SDXL["6"]["inputs"]["text"]


def test_sdxl_encoder_and_advanced_sampler():
    wf = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
        "2": {"class_type": "CLIPTextEncodeSDXL",
              "inputs": {"text_g": "", "text_l": "", "clip": ["1", 1], "width": 1024}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "ControlNetApplyAdvanced",
              "inputs": {"positive": ["2", 0], "negative": ["3", 0], "strength": 1.0}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 1, "height": 1, "batch_size": 1}},
        "6": {"class_type": "KSamplerAdvanced",
              "inputs": {"noise_seed": 1, "steps": 20, "positive": ["4", 0],
                         "negative": ["4", 1], "latent_image": ["5", 0]}},
    }
    b = find_bindings(wf)
    assert b["prompt"] == [("2", "text_g"), ("2", "text_l")]
    assert b["negative"] == [("3", "text")]
    assert b["seed"] == [("6", "noise_seed")]
    assert b["width"] == [("5", "width")]


def test_prompt_through_a_primitive_string():
    wf = json.loads((FIXTURES / "txt2img_tiny_sd15.json").read_text())
    b = find_bindings(wf)
    assert b["prompt"] and b["negative"] and b["prompt"] != b["negative"]
