"""explain.py against the real ComfyUI 0.3.64 captures in tests/fixtures/comfy-api.

Every rejected POST /prompt found in a `prompt_*.json` capture is run through
`explain_rejection`, so a newly recorded capture is covered without touching this file.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder.comfy.explain import explain_rejection, node_info_disagrees, node_info_wanted
from hotfolder.comfy.failure import (
    explain_execution_error,
    explain_history_failure,
    explain_interrupted,
)
from hotfolder.workflow.graph import node_label
from hotfolder.workflow.nodeinfo import CLASS_CUTOFF, closest, nearest_classes, suggest_choices

FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api"


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _exchanges(capture: Any) -> Iterator[dict[str, Any]]:
    """Every recorded HTTP exchange in a capture, however deeply the recorder nested it."""
    if isinstance(capture, dict):
        if "request" in capture and "status" in capture:
            yield capture
        for value in capture.values():
            yield from _exchanges(value)
    elif isinstance(capture, list):
        for value in capture:
            yield from _exchanges(value)


def _rejections() -> list[Any]:
    """(workflow, response) for each 400, and each 200 with node_errors, of POST /prompt."""
    cases = []
    for path in sorted(FIXTURES.glob("prompt_*.json")):
        for i, exchange in enumerate(_exchanges(_load(path.name))):
            answer = exchange.get("response_json")
            request = exchange["request"]
            if request.get("path") != "/prompt" or not isinstance(answer, dict):
                continue
            if exchange["status"] == 400 or answer.get("node_errors"):
                workflow = (request.get("json_body") or {}).get("prompt")
                cases.append(pytest.param(workflow, answer, id=f"{path.stem}-{i}"))
    return cases


REJECTIONS = _rejections()
OBJECT_INFO = _load("object_info_full.json")


def test_captures_are_found() -> None:
    names = " ".join(str(case.id) for case in REJECTIONS)
    for stem in ("unknown_class_type", "combo_sampler_not_in_list", "link_to_missing_node",
                 "prompt_partial_valid_outputs", "no_prompt_key", "loadimage_missing_file"):
        assert stem in names
    assert len(REJECTIONS) >= 18


def _expected_nodes(answer: dict[str, Any]) -> list[str]:
    nodes = list(answer.get("node_errors") or {})
    found = re.search(r"Node ID '#([^']*)'", str((answer.get("error") or {}).get("details")))
    return nodes or ([found.group(1)] if found else [])


@pytest.mark.parametrize("with_object_info", [False, True], ids=["bare", "object_info"])
@pytest.mark.parametrize(("workflow", "answer"), REJECTIONS)
def test_rejection_names_node_title_input_and_choice(workflow: Any, answer: dict[str, Any],
                                                     with_object_info: bool) -> None:
    object_info = OBJECT_INFO if with_object_info else None
    message, problems = explain_rejection(answer, workflow, object_info=object_info)
    assert message.startswith("ComfyUI ")
    assert problems and all(p["explanation"] in message for p in problems)
    json.dumps(problems)  # goes into the job's error file as is
    for node_id in _expected_nodes(answer):
        assert f"node {node_id}" in message
        title = ((workflow or {}).get(node_id, {}).get("_meta") or {}).get("title")
        if title:
            assert title in message
    for entry in (answer.get("node_errors") or {}).values():
        for err in entry["errors"]:
            extra = err.get("extra_info") or {}
            if extra.get("input_name"):
                assert f"input {extra['input_name']}" in message
            if err["type"] == "value_not_in_list":
                config = extra.get("input_config")
                choices = config[0] if config else None
                if choices is None and object_info is not None:
                    required = OBJECT_INFO[entry["class_type"]]["input"]["required"]
                    choices = required[extra["input_name"]][0]
                if choices is not None:
                    best = closest(extra["received_value"], choices) or choices
                    assert repr(best[0]) in message


def test_rejection_without_workflow_still_explains() -> None:
    for case in REJECTIONS:
        message, problems = explain_rejection(case.values[1], None)
        assert message.startswith("ComfyUI ") and problems


def _case(stem: str) -> tuple[dict[str, Any], Any]:
    """(answer, workflow), in explain_rejection's argument order."""
    workflow, answer = next(c.values for c in REJECTIONS if str(c.id).startswith(stem))
    return answer, workflow


def test_combo_ckpt_names_the_only_choice() -> None:
    message, problems = explain_rejection(*_case("prompt_error_combo_value_not_in_list"))
    assert message.startswith(
        "ComfyUI rejected the workflow: node 4 'Load Checkpoint' (CheckpointLoaderSimple), "
        "input ckpt_name: 'v1-5-pruned-emaonly.safetensors' is not one of the server's choices.")
    assert "'tiny-random-sd15.safetensors'" in message
    assert problems[0]["choices"] == ["tiny-random-sd15.safetensors"]
    assert problems[0]["value"] == "v1-5-pruned-emaonly.safetensors"


def test_combo_sampler_needs_object_info_for_choices() -> None:
    answer, workflow = _case("prompt_error_combo_sampler_not_in_list")
    bare, _ = explain_rejection(answer, workflow)
    assert "did not send the list of choices (it has 42 entries)" in bare
    full, problems = explain_rejection(answer, workflow, object_info=OBJECT_INFO)
    assert "is not one of the server's choices; did you mean 'euler'?" in full
    assert problems[0]["choices"][0] == "euler"


def test_a_misspelt_sampler_gets_the_server_choice_it_meant() -> None:
    """ComfyUI 0.3.64 sends no choices for a list of over 20; the definitions name the fix."""
    answer, workflow = _case("prompt_error_combo_sampler_not_in_list")
    answer = json.loads(json.dumps(answer).replace("euler_bogus", "euler_ancestrial"))
    assert node_info_wanted(answer) == ["KSampler"]
    message, problems = explain_rejection(answer, workflow, object_info=OBJECT_INFO)
    assert message.startswith(
        "ComfyUI rejected the workflow: node 3 (KSampler), input sampler_name: "
        "'euler_ancestrial' is not one of the server's choices; did you mean "
        "'euler_ancestral'? Also close: ")
    assert problems[0]["choices"][0] == "euler_ancestral"


def test_when_node_definitions_are_wanted_and_when_a_cached_copy_is_stale() -> None:
    sampler, _ = _case("prompt_error_combo_sampler_not_in_list")
    listed, _ = _case("prompt_error_combo_value_not_in_list")  # its choices came along
    unknown, _ = _case("prompt_error_unknown_class_type")
    assert node_info_wanted(listed) is None
    assert node_info_wanted(unknown) == []
    assert node_info_wanted({"error": "x"}) is None and node_info_wanted(None) is None
    assert not node_info_disagrees(sampler, OBJECT_INFO)
    assert not node_info_disagrees(unknown, OBJECT_INFO)
    has_it = json.loads(json.dumps(sampler).replace("euler_bogus", "euler"))
    assert node_info_disagrees(has_it, OBJECT_INFO)  # the server no longer has 'euler'
    assert node_info_disagrees(sampler, {})  # KSampler unknown to the cached copy
    assert node_info_disagrees(unknown, {"CheckpointSimple": {}})  # the server lost a class


def test_unknown_class_names_node_and_suggests_with_object_info() -> None:
    answer, workflow = _case("prompt_error_unknown_class_type")
    message, problems = explain_rejection(answer, workflow)
    assert "node 4 'Load Checkpoint' uses class_type 'CheckpointSimple'" in message
    assert "does not exist on this server" in message
    assert problems[0]["node_id"] == "4" and problems[0]["class_type"] == "CheckpointSimple"
    message, _ = explain_rejection(answer, workflow, object_info=OBJECT_INFO)
    assert "Did you mean 'CheckpointLoaderSimple'?" in message


def test_newer_missing_node_type_error() -> None:
    answer = {"error": {"type": "missing_node_type", "message": "Node 'X' not found.",
                        "details": "Node ID '#4'",
                        "extra_info": {"node_id": "4", "class_type": "CheckpointSimple",
                                       "node_title": "Load Checkpoint"}}, "node_errors": {}}
    _, workflow = _case("prompt_error_unknown_class_type")
    message, _ = explain_rejection(answer, workflow)
    assert "node 4 'Load Checkpoint' uses class_type 'CheckpointSimple'" in message


def test_missing_class_type() -> None:
    message, _ = explain_rejection(*_case("prompt_error_node_missing_class_type"))
    assert "node 6 'CLIP Text Encode (Positive)' has no class_type" in message


def test_link_to_missing_node_names_the_real_input() -> None:
    message, problems = explain_rejection(*_case("prompt_error_link_to_missing_node"))
    assert "node 3 (KSampler), input model is linked to node 99, which is not in the workflow" \
        in message
    assert "following input samples of node 8 'VAE Decode'" in message
    assert problems[0]["input"] == "model" and problems[0]["value"] == ["99", 0]


def test_link_with_int_node_id() -> None:
    message, problems = explain_rejection(*_case("prompt_error_link_with_int_node_id"))
    assert "input model links to node 4 written as a number" in message
    assert '["4", 0]' in message and problems[0]["input"] == "model"


def test_link_slot_out_of_range() -> None:
    answer, workflow = _case("prompt_error_link_slot_out_of_range")
    bare, _ = explain_rejection(answer, workflow)
    assert "input model is linked to output 7 of node 4 'Load Checkpoint'" in bare
    assert "probably" in bare  # without object_info the culprit is a guess, and says so
    full, _ = explain_rejection(answer, workflow, object_info=OBJECT_INFO)
    assert "which has only 3 outputs" in full and "probably" not in full


def test_type_mismatch_int_not_a_number_and_min_max() -> None:
    message, _ = explain_rejection(*_case("prompt_error_link_type_mismatch"))
    assert "input samples expects LATENT but is linked to output 0 of node 4" in message
    assert "which gives MODEL" in message
    message, _ = explain_rejection(*_case("prompt_error_int_not_a_number"))
    assert "input steps: 'four' is not a valid INT" in message
    message, _ = explain_rejection(*_case("prompt_error_int_above_max"))
    assert "input width: 99999 is above the maximum of 16384" in message
    message, _ = explain_rejection(*_case("prompt_error_int_below_min"))
    assert "input steps: 0 is below the minimum of 1" in message
    message, _ = explain_rejection(*_case("prompt_error_missing_required_input"))
    assert "node 3 (KSampler): required input seed is missing" in message


def test_loadimage_missing_file() -> None:
    message, _ = explain_rejection(*_case("prompt_error_loadimage_missing_file"))
    assert "node 1 (LoadImage), input image: 'does-not-exist.png' was refused" in message
    assert "upload it first" in message


def test_partial_outputs_say_what_was_skipped() -> None:
    message, problems = explain_rejection(*_case("prompt_partial_valid_outputs"))
    assert message.startswith("ComfyUI queued the workflow but skipped output node 3 (SaveImage)")
    assert "input images is linked to node 99" in message
    assert problems[0]["input"] == "images"


def test_request_level_errors() -> None:
    message, _ = explain_rejection(*_case("prompt_error_no_output_node"))
    assert "no output node" in message
    message, _ = explain_rejection(*_case("prompt_error_empty_prompt"))
    assert "no nodes" in message
    answer, _ = _case("prompt_error_gui_workflow_as_body")
    gui = {"nodes": [], "links": []}
    message, _ = explain_rejection(answer, gui)
    assert 'no "prompt"' in message and "Export (API)" in message


def test_unknown_error_types_keep_comfyui_words() -> None:
    answer = {"error": {"type": "prompt_outputs_failed_validation", "message": "m", "details": ""},
              "node_errors": {"3": {"class_type": "KSampler", "errors": [
                  {"type": "brand_new_check", "message": "Something new", "details": "seed: odd",
                   "extra_info": {"input_name": "seed", "received_value": 7}}]}}}
    _, workflow = _case("prompt_error_int_below_min")
    message, _ = explain_rejection(answer, workflow)
    assert "node 3 (KSampler), input seed (value 7): ComfyUI reported brand_new_check" in message
    assert 'ComfyUI said: "Something new: seed: odd"' in message
    message, _ = explain_rejection({"error": {"type": "weird", "message": "Odd thing",
                                              "details": "x"}, "node_errors": {}}, None)
    assert message == "ComfyUI rejected the workflow: Odd thing: x (weird)."
    message, _ = explain_rejection({}, None)
    assert message.startswith("ComfyUI rejected the workflow: no reason given")


def test_many_problems_are_capped_in_the_summary() -> None:
    errors = [{"type": "required_input_missing", "message": "Required input is missing",
               "details": f"in{i}", "extra_info": {"input_name": f"in{i}"}} for i in range(12)]
    answer = {"error": {"type": "prompt_outputs_failed_validation"},
              "node_errors": {"1": {"class_type": "X", "errors": errors}}}
    message, problems = explain_rejection(answer, None)
    assert len(problems) == 12 and "(12 problems)" in message and "4 more problems" in message


# ------------------------------------------------------------------ execution time


def _frame(capture: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(f["json"]["data"] for f in capture["frames"]
                if f.get("kind") == "text" and f["json"].get("type") == kind)


def test_ws_runtime_error() -> None:
    capture = _load("ws_runtime_error.json")
    workflow = capture["post"]["request"]["json_body"]["prompt"]
    message, details = explain_execution_error(_frame(capture, "execution_error"), workflow)
    assert message.startswith("ComfyUI failed while running node 2 (SaveImage): Exception: ")
    assert "Saving image outside the output folder is not allowed" in message
    assert "'../../escape/attempt'" in message
    assert "current_inputs" not in details and len(details["traceback"]) <= 3
    assert details["traceback"][-1].endswith("raise Exception(err)")
    assert len(json.dumps(details)) < 2000


def test_history_after_runtime_error() -> None:
    (entry,) = _load("history_after_runtime_error.json")["response_json"].values()
    message, details = explain_history_failure(entry, None)  # nodes named from entry's prompt
    assert "node 2 (SaveImage)" in message
    assert "Saving image outside the output folder is not allowed" in message
    assert details["node_id"] == "2" and details["executed"] == ["1"]


def test_interrupt_from_history_and_websocket() -> None:
    capture = _load("interrupt_running.json")
    (entry,) = capture["history_A"]["response_json"].values()
    message, details = explain_history_failure(entry, None)
    assert "interrupted" in message and "node 3 (KSampler)" in message
    assert details["node_id"] == "3"
    workflow = capture["post_A"]["request"]["json_body"]["prompt"]
    message, _ = explain_interrupted(_frame(capture, "execution_interrupted"), workflow)
    assert message.startswith("ComfyUI interrupted the job while node 3 (KSampler) was running")
    (entry,) = _load("interrupt_global_no_body.json")["history"]["response_json"].values()
    assert "interrupted" in explain_history_failure(entry, None)[0]


def test_history_failure_without_reason_is_honest() -> None:
    entry = {"status": {"status_str": "error", "completed": False, "messages": [
        ["execution_start", {"prompt_id": "p"}]]}}
    message, details = explain_history_failure(entry, None)
    assert "without saying why" in message and details["events"] == ["execution_start"]


def test_oom_hint() -> None:
    message, _ = explain_execution_error(
        {"node_id": "3", "node_type": "KSampler", "exception_type": "torch.OutOfMemoryError",
         "exception_message": "CUDA out of memory. Tried to allocate 2 GiB\nmore\nlines\nhidden",
         "traceback": []}, None)
    assert "torch.OutOfMemoryError: CUDA out of memory" in message and "hidden" not in message
    assert "ran out of memory" in message


# ------------------------------------------------------------------ helpers


def test_node_label() -> None:
    workflow = {
        "4": {"class_type": "CheckpointLoaderSimple", "_meta": {"title": "Load Checkpoint"}},
        "3": {"class_type": "KSampler", "_meta": {"title": "KSampler"}},
    }
    assert node_label(workflow, "4") == "node 4 'Load Checkpoint' (CheckpointLoaderSimple)"
    assert node_label(workflow, "3") == "node 3 (KSampler)"
    assert node_label(None, "9", "SaveImage") == "node 9 (SaveImage)"
    assert node_label(workflow, "4", "") == "node 4 'Load Checkpoint'"
    assert node_label({}, "7") == "node 7"


def test_nearest_classes_by_words_and_by_fit() -> None:
    assert nearest_classes("CheckpointSimple", OBJECT_INFO)[0] == "CheckpointLoaderSimple"
    # the inputs the node was given rule out CheckpointSave, which spelling alone offers
    assert "CheckpointSave" in nearest_classes("CheckpointSimple", OBJECT_INFO)
    assert "CheckpointSave" not in nearest_classes("CheckpointSimple", OBJECT_INFO,
                                                   ["ckpt_name"])
    # all the words in order lift a class difflib alone would leave below the cut-off
    info = {"ImageScale": {}, "SamplerCustomAdvancedDenoise": {}}
    ratio = difflib.SequenceMatcher(None, "samplerdenoise", "samplercustomadvanceddenoise")
    assert ratio.ratio() < CLASS_CUTOFF
    assert nearest_classes("SamplerDenoise", info) == ["SamplerCustomAdvancedDenoise"]
    without = {k: v for k, v in OBJECT_INFO.items() if k != "VAEEncode"}
    assert closest("VAEEncode", without)[0] == "VAEDecode"  # what spelling alone says
    assert nearest_classes("VAEEncode", without) == ["VAEEncodeTiled", "VAEEncodeForInpaint"]
    assert nearest_classes("LoadImage", {"SaveImage": {}}) == []
    assert nearest_classes("KSamplr", OBJECT_INFO, ["seed"]) == ["KSampler"]
    assert nearest_classes("X", None) == []


def test_closest_and_suggest_choices() -> None:
    assert closest("Euler", ["euler", "heun"]) == ["euler"]
    assert closest("zzz", ["euler", "heun"]) == []
    assert suggest_choices("x.safetensors", ["a.ckpt"])[1] == ["a.ckpt"]
    text, shown = suggest_choices("q", [f"c{i}" for i in range(30)])
    assert shown == ["c0", "c1", "c2", "c3", "c4"] and "first 5 of 30" in text
    assert suggest_choices("q", [])[1] == []
