"""GUI -> API conversion: each frontend behaviour on a small graph, and every refusal's wording."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from hotfolder.errors import JobError, ServerError
from hotfolder.job.parse import parse_bytes
from hotfolder.workflow.graph import is_gui_workflow
from hotfolder.workflow.gui2api.cache import MAX_SERVERS, ObjectInfoCache
from hotfolder.workflow.gui2api.convert import build, convert
from hotfolder.workflow.gui2api.detect import node_types
from hotfolder.workflow.gui2api.widgets import dynamic_prompt

FIXTURES = Path(__file__).parent / "fixtures"
OBJECT_INFO = json.loads((FIXTURES / "comfy-api" / "object_info_full.json").read_text("utf-8"))
SDXL_GUI = json.loads((FIXTURES / "gui2api" / "image_sdxl_simple" / "gui.json").read_text("utf-8"))


def slot(name: str, kind: str, link: int | None = None, widget: bool = False) -> dict[str, Any]:
    return {"name": name, "type": kind, "link": link, **({"widget": {"name": name}}
                                                          if widget else {})}


def out(name: str, kind: str, *links: int) -> dict[str, Any]:
    return {"name": name, "type": kind, "links": list(links)}


def txt2img() -> dict[str, Any]:
    """Checkpoint -> two prompts -> KSampler -> VAE Decode -> Save, as the editor saves it."""
    nodes = [
        {"id": 4, "type": "CheckpointLoaderSimple", "mode": 0, "inputs": [],
         "outputs": [out("MODEL", "MODEL", 1), out("CLIP", "CLIP", 3, 5), out("VAE", "VAE", 8)],
         "widgets_values": ["sd_xl_base_1.0.safetensors"]},
        {"id": 6, "type": "CLIPTextEncode", "mode": 0, "title": "Positive",
         "inputs": [slot("clip", "CLIP", 3)], "outputs": [out("CONDITIONING", "CONDITIONING", 4)],
         "widgets_values": ["a red fox"]},
        {"id": 7, "type": "CLIPTextEncode", "mode": 0, "title": "Negative",
         "inputs": [slot("clip", "CLIP", 5)], "outputs": [out("CONDITIONING", "CONDITIONING", 6)],
         "widgets_values": ["blurry"]},
        {"id": 5, "type": "EmptyLatentImage", "mode": 0, "inputs": [],
         "outputs": [out("LATENT", "LATENT", 2)], "widgets_values": [512, 512, 1]},
        {"id": 3, "type": "KSampler", "mode": 0,
         "inputs": [slot("model", "MODEL", 1), slot("positive", "CONDITIONING", 4),
                    slot("negative", "CONDITIONING", 6), slot("latent_image", "LATENT", 2)],
         "outputs": [out("LATENT", "LATENT", 7)],
         "widgets_values": [42, "randomize", 20, 7.5, "euler", "normal", 1.0]},
        {"id": 8, "type": "VAEDecode", "mode": 0,
         "inputs": [slot("samples", "LATENT", 7), slot("vae", "VAE", 8)],
         "outputs": [out("IMAGE", "IMAGE", 9)]},
        {"id": 9, "type": "SaveImage", "mode": 0, "inputs": [slot("images", "IMAGE", 9)],
         "outputs": [], "widgets_values": ["fox"]},
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
             [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"],
             [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"],
             [8, 4, 2, 8, 1, "VAE"], [9, 8, 0, 9, 0, "IMAGE"]]
    return {"last_node_id": 9, "last_link_id": 9, "nodes": nodes, "links": links, "version": 0.4}


def find(gui: dict[str, Any], node_id: int) -> dict[str, Any]:
    return next(n for n in gui["nodes"] if n["id"] == node_id)


def add(gui: dict[str, Any], node: dict[str, Any], *links: list[Any]) -> None:
    gui["nodes"].append(node)
    gui["links"].extend(links)


def relink(gui: dict[str, Any], link_id: int, origin: int, origin_slot: int) -> None:
    """Point an existing link at another source (the target keeps its input)."""
    link = next(x for x in gui["links"] if x[0] == link_id)
    link[1], link[2] = origin, origin_slot


# -- the frontend's behaviours --------------------------------------------------------------


def test_widgets_by_definition_order_seed_control_skipped_numbers_as_javascript() -> None:
    api = convert(txt2img(), OBJECT_INFO)
    assert api["3"] == {
        "inputs": {"seed": 42, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                   "scheduler": "normal", "denoise": 1, "model": ["4", 0],
                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
        "class_type": "KSampler", "_meta": {"title": "KSampler"}}
    assert isinstance(api["3"]["inputs"]["denoise"], int)  # 1.0 is written 1, as JS does
    assert api["6"]["_meta"]["title"] == "Positive"
    assert api["4"]["_meta"]["title"] == "Load Checkpoint"  # the server's display_name
    assert api["9"]["inputs"] == {"filename_prefix": "fox", "images": ["8", 0]}


def test_extra_trailing_widget_values_from_newer_nodes_are_ignored() -> None:
    gui = txt2img()
    find(gui, 5)["widgets_values"] = [640, 480, 2, "a value a newer version added"]
    assert convert(gui, OBJECT_INFO)["5"]["inputs"] == {"width": 640, "height": 480,
                                                        "batch_size": 2}


def test_missing_widget_values_take_the_definition_defaults() -> None:
    gui = txt2img()
    find(gui, 5)["widgets_values"] = [640]
    assert convert(gui, OBJECT_INFO)["5"]["inputs"] == {"width": 640, "height": 512,
                                                        "batch_size": 1}


def test_an_input_fed_by_a_link_takes_the_link_not_the_widget() -> None:
    gui = txt2img()
    add(gui, {"id": 20, "type": "PrimitiveInt", "mode": 0, "inputs": [],
              "outputs": [out("INT", "INT", 20)], "widgets_values": [7, "fixed"]},
        [20, 20, 0, 3, 4, "INT"])
    find(gui, 3)["inputs"].append(slot("steps", "INT", 20, widget=True))
    api = convert(gui, OBJECT_INFO)
    assert api["3"]["inputs"]["steps"] == ["20", 0]
    assert api["20"]["inputs"] == {"value": 7}


def test_reroute_chains_resolve_to_the_real_source() -> None:
    gui = txt2img()
    add(gui, {"id": 30, "type": "Reroute", "mode": 0, "inputs": [slot("", "*", 30)],
              "outputs": [out("", "VAE", 31)]},
        [30, 4, 2, 30, 0, "VAE"])
    add(gui, {"id": 31, "type": "Reroute", "mode": 0, "inputs": [slot("", "*", 31)],
              "outputs": [out("", "VAE", 8)]},
        [31, 30, 0, 31, 0, "VAE"])
    relink(gui, 8, 31, 0)
    api = convert(gui, OBJECT_INFO)
    assert api["8"]["inputs"]["vae"] == ["4", 2]
    assert "30" not in api and "31" not in api


def test_primitive_node_writes_its_value_into_every_target() -> None:
    gui = txt2img()
    add(gui, {"id": 40, "type": "PrimitiveNode", "mode": 0, "inputs": [],
              "outputs": [{"name": "STRING", "type": "STRING", "links": [40, 41],
                           "widget": {"name": "text"}}],
              "widgets_values": ["from the primitive"]},
        [40, 40, 0, 6, 1, "STRING"], [41, 40, 0, 7, 1, "STRING"])
    find(gui, 6)["inputs"].append(slot("text", "STRING", 40, widget=True))
    find(gui, 7)["inputs"].append(slot("text", "STRING", 41, widget=True))
    api = convert(gui, OBJECT_INFO)
    assert api["6"]["inputs"]["text"] == api["7"]["inputs"]["text"] == "from the primitive"
    assert "40" not in api


def test_notes_and_muted_nodes_are_dropped() -> None:
    gui = txt2img()
    add(gui, {"id": 50, "type": "Note", "mode": 0, "inputs": [], "outputs": [],
              "widgets_values": ["remember the fox"]})
    add(gui, {"id": 51, "type": "PreviewImage", "mode": 2, "inputs": [slot("images", "IMAGE")],
              "outputs": []})
    api = convert(gui, OBJECT_INFO)
    assert set(api) == {"3", "4", "5", "6", "7", "8", "9"}


def test_bypassed_node_passes_on_its_input_of_the_consumers_type() -> None:
    gui = txt2img()  # a LoRA between checkpoint and sampler, bypassed
    add(gui, {"id": 60, "type": "LoraLoader", "mode": 4,
              "inputs": [slot("model", "MODEL", 60), slot("clip", "CLIP", 61)],
              "outputs": [out("MODEL", "MODEL", 1), out("CLIP", "CLIP", 3)],
              "widgets_values": ["add-detail.safetensors", 1, 1]},
        [60, 4, 0, 60, 0, "MODEL"], [61, 4, 1, 60, 1, "CLIP"])
    relink(gui, 1, 60, 0)
    relink(gui, 3, 60, 1)
    api = convert(gui, OBJECT_INFO)
    assert "60" not in api
    assert api["3"]["inputs"]["model"] == ["4", 0]
    assert api["6"]["inputs"]["clip"] == ["4", 1]


def test_bypass_prefers_the_input_at_the_same_slot() -> None:
    gui = txt2img()  # ImageBlend(image1, image2): its output 0 is IMAGE, so image1 passes on
    add(gui, {"id": 61, "type": "ImageInvert", "mode": 0,
              "inputs": [slot("image", "IMAGE", 62)], "outputs": [out("IMAGE", "IMAGE", 63)]},
        [62, 8, 0, 61, 0, "IMAGE"])
    add(gui, {"id": 62, "type": "ImageBlend", "mode": 4,
              "inputs": [slot("image1", "IMAGE", 63), slot("image2", "IMAGE", 64)],
              "outputs": [out("IMAGE", "IMAGE", 9)], "widgets_values": [0.5, "normal"]},
        [63, 61, 0, 62, 0, "IMAGE"], [64, 8, 0, 62, 1, "IMAGE"])
    relink(gui, 9, 62, 0)
    assert convert(gui, OBJECT_INFO)["9"]["inputs"]["images"] == ["61", 0]


@pytest.mark.parametrize(("types", "passed"), [
    (["LATENT", "IMAGE", "IMAGE"], "8"),  # slot 0 does not fit: the first input of type IMAGE
    (["LATENT", "MASK,IMAGE", "IMAGE"], "61"),  # the exact IMAGE at slot 2 beats slot 1
    (["LATENT", "MASK,IMAGE"], "8"),  # no exact type: the first that fits
])
def test_bypass_falls_back_to_exact_type_then_first_compatible(types: list[str],
                                                               passed: str) -> None:
    gui = txt2img()  # a custom node (unknown here: bypassed, so its saved slots are used)
    add(gui, {"id": 61, "type": "ImageInvert", "mode": 0,
              "inputs": [slot("image", "IMAGE", 62)], "outputs": [out("IMAGE", "IMAGE", 65)]},
        [62, 8, 0, 61, 0, "IMAGE"])
    sources = {1: (8, 0), 2: (61, 0)}
    inputs = []
    for i, kind in enumerate(types):
        if i in sources:
            gui["links"].append([70 + i, *sources[i], 63, i, kind])
            inputs.append(slot(f"in{i}", kind, 70 + i))
        else:
            inputs.append(slot(f"in{i}", kind))
    add(gui, {"id": 63, "type": "SomeCustomImageNode", "mode": 4, "inputs": inputs,
              "outputs": [out("IMAGE", "IMAGE", 9)]})
    relink(gui, 9, 63, 0)
    assert convert(gui, OBJECT_INFO)["9"]["inputs"]["images"] == [passed, 0]


def test_subgraphs_are_flattened_with_the_frontends_ids() -> None:
    api = convert(json.loads((FIXTURES / "gui2api" / "image_netayume_lumina_t2i"
                              / "gui.json").read_text("utf-8")), OBJECT_INFO)
    assert any(key.count(":") == 2 for key in api)  # "48:35:42": a subgraph in a subgraph
    assert all(not isinstance(v, list) or v[0] in api for n in api.values()
               for v in n["inputs"].values())


def test_array_widget_values_are_wrapped() -> None:
    gui = txt2img()
    find(gui, 9)["widgets_values"] = [["a", "list"]]
    assert convert(gui, OBJECT_INFO)["9"]["inputs"]["filename_prefix"] == \
        {"__value__": ["a", "list"]}


def test_dynamic_prompts_pick_one_option_and_drop_comments() -> None:
    gui = txt2img()
    find(gui, 6)["widgets_values"] = ["a {red|grey} fox // not sent\nin /* nor this */snow"]
    texts = {convert(gui, OBJECT_INFO, rng=random.Random(seed))["6"]["inputs"]["text"]
             for seed in range(20)}
    assert texts == {"a red fox \nin snow", "a grey fox \nin snow"}
    # the filename prefix is not a dynamic-prompt widget: left as it is
    find(gui, 9)["widgets_values"] = ["{a|b}"]
    assert convert(gui, OBJECT_INFO)["9"]["inputs"]["filename_prefix"] == "{a|b}"


def test_dynamic_prompt_syntax_follows_the_frontend() -> None:
    rng = random.Random(3)
    assert dynamic_prompt(r"\{literal\} \| bar", rng) == "{literal} | bar"
    assert dynamic_prompt("{a|{b|c}}", random.Random(0)) in {"a", "b", "c"}
    assert dynamic_prompt("see https://example.com", rng) == "see https:"  # as the frontend
    assert dynamic_prompt("{only}", rng) == "only"


# -- refusals ---------------------------------------------------------------------------------


def test_unknown_node_type_names_the_node_and_the_closest_class() -> None:
    gui = copy.deepcopy(SDXL_GUI)
    find(gui, 15)["type"] = "CheckpointLoaderSimpel"
    find(gui, 15)["title"] = "My checkpoint"
    with pytest.raises(JobError) as info:
        convert(gui, OBJECT_INFO)
    message = info.value.message
    assert message.startswith("cannot convert the GUI workflow: node 15 'My checkpoint' "
                              "(CheckpointLoaderSimpel) is a node type this server does not "
                              "have")
    assert "closest: CheckpointLoaderSimple" in message
    assert info.value.kind == "conversion"


def test_unknown_type_of_a_muted_or_bypassed_node_does_not_matter() -> None:
    gui = txt2img()
    add(gui, {"id": 70, "type": "SomeCustomNode", "mode": 2, "inputs": [], "outputs": []})
    add(gui, {"id": 71, "type": "OtherCustomNode", "mode": 4, "inputs": [], "outputs": []})
    assert "70" not in convert(gui, OBJECT_INFO)


def test_bypassed_node_without_a_matching_input_leaves_a_required_input_missing() -> None:
    gui = txt2img()
    find(gui, 8)["mode"] = 4  # VAE Decode bypassed: it has no IMAGE input to pass on
    result = build(gui, OBJECT_INFO)
    assert result.prompt["9"]["inputs"] == {"filename_prefix": "fox"}  # as the frontend has it
    with pytest.raises(JobError) as info:
        convert(gui, OBJECT_INFO)
    assert info.value.message == (
        "cannot convert the GUI workflow: it cannot run on this server: node 9 "
        "(SaveImage): required input 'images' has no source: it is fed by node 8 (VAEDecode), "
        "which is bypassed and has no IMAGE input to pass on")


def test_bypassed_node_whose_own_input_is_unconnected() -> None:
    gui = txt2img()
    find(gui, 7)["mode"] = 4
    find(gui, 7)["inputs"][0]["link"] = None  # bypassed, and nothing feeds it either
    with pytest.raises(JobError, match=r"node 3 \(KSampler\): required input 'negative' has no "
                                       r"source: it is fed by node 7 'Negative' "
                                       r"\(CLIPTextEncode\), which is bypassed"):
        convert(gui, OBJECT_INFO)


def test_muted_source_of_a_required_input() -> None:
    gui = txt2img()
    find(gui, 5)["mode"] = 2
    with pytest.raises(JobError, match=r"node 3 \(KSampler\): required input 'latent_image' has "
                                       r"no source: it is fed by node 5 \(EmptyLatentImage\), "
                                       r"which is muted"):
        convert(gui, OBJECT_INFO)


def test_unconnected_required_input_of_a_node_no_output_needs_is_fine() -> None:
    gui = txt2img()
    add(gui, {"id": 80, "type": "VAEDecode", "mode": 0,
              "inputs": [slot("samples", "LATENT"), slot("vae", "VAE")], "outputs": []})
    assert convert(gui, OBJECT_INFO)["80"]["inputs"] == {}  # the server ignores it too


def test_widget_only_the_browser_can_fill_in_is_refused() -> None:
    gui = txt2img()
    add(gui, {"id": 90, "type": "WebcamCapture", "mode": 0, "inputs": [],
              "outputs": [out("IMAGE", "IMAGE")], "widgets_values": [0, 640, 480, True]})
    with pytest.raises(JobError, match=r"node 90 \(WebcamCapture\): its input 'image' is filled "
                                       r"in by the editor"):
        convert(gui, OBJECT_INFO)


def test_group_nodes_are_refused() -> None:
    gui = txt2img()
    gui["extra"] = {"groupNodes": {"Sampler group": {"nodes": []}}}
    with pytest.raises(JobError, match="group nodes"):
        convert(gui, OBJECT_INFO)


@pytest.mark.parametrize(("change", "words"), [
    (lambda g: g.update(nodes={}), "'nodes' must be a list"),
    (lambda g: g["nodes"].append({"id": 99}), "(id 99) has no type"),
    (lambda g: g["nodes"].append(dict(g["nodes"][0])), "two nodes have the id 4"),
    (lambda g: g["links"].append(["x"]), "links[9] is not a link"),
    (lambda g: g.update(definitions={"subgraphs": [{"name": "no id"}]}),
     "definitions.subgraphs[0] is not a subgraph definition"),
])
def test_malformed_files_say_what_is_wrong(change: Any, words: str) -> None:
    gui = txt2img()
    change(gui)
    with pytest.raises(JobError, match="the GUI workflow is malformed") as info:
        convert(gui, OBJECT_INFO)
    assert words in info.value.message


def test_a_subgraph_containing_itself_is_refused() -> None:
    gui = txt2img()
    sid = "5d0c0c9e-0000-4000-8000-000000000001"
    gui["definitions"] = {"subgraphs": [{"id": sid, "name": "loop", "inputs": [], "outputs": [],
                                         "links": [], "nodes": [{"id": 1, "type": sid}]}]}
    add(gui, {"id": 95, "type": sid, "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(JobError, match="subgraph 'loop' contains itself"):
        convert(gui, OBJECT_INFO)


# -- detection, parsing, the definitions cache -----------------------------------------------


def test_detection_and_the_classes_a_save_needs() -> None:
    assert is_gui_workflow(SDXL_GUI)
    assert not is_gui_workflow({"3": {"class_type": "KSampler", "inputs": {}}})
    assert node_types(SDXL_GUI) == {"SaveImage", "CLIPTextEncode", "KSampler",
                                    "EmptyLatentImage", "VAEDecode", "CheckpointLoaderSimple"}


def test_a_dropped_gui_save_parses_as_a_workflow_to_convert() -> None:
    spec = parse_bytes("gui.json", json.dumps(SDXL_GUI).encode())
    assert spec.kind == "workflow" and spec.source_format == "gui"
    with pytest.raises(JobError, match="malformed"):
        parse_bytes("bad.json", b'{"nodes": [{"id": 1}], "links": []}')


class FakeServer:
    name, url = "gpu1", "http://gpu1:8188"

    def __init__(self) -> None:
        self.calls = 0
        self.info: dict[str, Any] = {"KSampler": {}}
        self.fail = False

    def object_info(self) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise ServerError("unreachable", server=self.name)
        return dict(self.info)


def test_definitions_are_fetched_once_and_again_when_a_class_is_missing() -> None:
    now = [0.0]
    cache = ObjectInfoCache(retry_missing=5, max_age=600, clock=lambda: now[0])
    server = FakeServer()
    assert "KSampler" in cache.get(server, {"KSampler"})
    cache.get(server, {"KSampler"})
    assert server.calls == 1
    server.info["UltimateSDUpscale"] = {}  # a custom node installed since
    now[0] = 1.0
    assert "UltimateSDUpscale" not in cache.get(server, {"UltimateSDUpscale"})  # just fetched
    now[0] = 6.0
    assert "UltimateSDUpscale" in cache.get(server, {"UltimateSDUpscale"})
    assert server.calls == 2
    now[0] = 700.0
    cache.get(server)
    assert server.calls == 3  # too old: the server may have been upgraded


def test_definitions_are_fetched_again_after_a_restart_or_when_they_contradict_it() -> None:
    now = [0.0]
    cache = ObjectInfoCache(retry_missing=5, max_age=600, clock=lambda: now[0])
    server = FakeServer()
    cache.get(server, epoch=("ws-1", 0))
    cache.get(server, epoch=("ws-1", 0))
    assert server.calls == 1
    cache.get(server, epoch=("ws-2", 0))  # the WebSocket reconnected: it may have restarted
    assert server.calls == 2
    now[0] = 1.0
    cache.get(server, epoch=("ws-2", 0), stale=lambda info: True)
    assert server.calls == 2  # a contradiction moments after a fetch: not asked again yet
    now[0] = 7.0
    cache.get(server, epoch=("ws-2", 0), stale=lambda info: True)
    assert server.calls == 3


def test_definitions_of_at_most_so_many_servers_are_kept() -> None:
    now = [0.0]
    cache = ObjectInfoCache(clock=lambda: now[0])
    for i in range(MAX_SERVERS + 5):
        now[0] = float(i)
        server = FakeServer()
        server.name = f"gpu{i}"
        cache.get(server)
    assert len(cache._entries) == MAX_SERVERS
    assert ("gpu0", FakeServer.url) not in cache._entries  # the oldest went first


def test_a_server_that_cannot_be_asked_is_a_server_error() -> None:
    server = FakeServer()
    server.fail = True
    with pytest.raises(ServerError):
        ObjectInfoCache().get(server)


def _pair_gui(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "gui2api" / name / "gui.json").read_text("utf-8"))


def test_values_kept_on_an_older_subgraph_instance_are_used() -> None:
    gui = _pair_gui("3d_hunyuan3d-v2.1")  # instance 19 stores one value per widget input
    instance = find(gui, 19)
    assert instance["widgets_values"][1] == 30  # "steps", inside: KSampler 7
    instance["widgets_values"][1] = 12
    assert convert(gui, OBJECT_INFO)["19:7"]["inputs"]["steps"] == 12


def test_a_muted_subgraph_instance_mutes_everything_inside() -> None:
    gui = _pair_gui("flux1_krea_dev")
    find(gui, 200)["mode"] = 2
    result = build(gui, OBJECT_INFO)
    assert set(result.prompt) == {"9"}
    assert result.problems == ["node 9 (SaveImage): required input 'images' has no source: it "
                               "is fed by node 200 (subgraph 'Text to Image (Flux.1 Krea "
                               "Dev)'), which is muted"]


def test_an_output_node_inside_a_bypassed_subgraph_is_left_out() -> None:
    gui = _pair_gui("flux1_krea_dev")
    inner = gui["definitions"]["subgraphs"][0]
    inner["nodes"].append({"id": 500, "type": "PreviewImage", "mode": 0,
                           "inputs": [slot("images", "IMAGE", 500)], "outputs": []})
    inner["links"].append({"id": 500, "origin_id": 198, "origin_slot": 0, "target_id": 500,
                           "target_slot": 0, "type": "IMAGE"})
    assert "200:500" in convert(gui, OBJECT_INFO)
    find(gui, 200)["mode"] = 4
    prompt = build(gui, OBJECT_INFO).prompt
    assert "200:500" not in prompt
    assert "200:198" in prompt  # the rest is sent, unreferenced, as the frontend does


def test_a_primitive_linked_to_a_subgraph_input_reaches_the_node_inside() -> None:
    gui = _pair_gui("flux_dev_full_text_to_image")  # instance 194's input "text" -> 49.text
    instance = find(gui, 194)
    assert instance["inputs"][0]["name"] == "text"
    instance["inputs"][0]["link"] = 700
    add(gui, {"id": 700, "type": "PrimitiveNode", "mode": 0, "inputs": [],
              "outputs": [{"name": "STRING", "type": "STRING", "links": [700],
                           "widget": {"name": "text"}}],
              "widgets_values": ["a lighthouse at dusk"]},
        [700, 700, 0, 194, 0, "STRING"])
    assert convert(gui, OBJECT_INFO)["194:49"]["inputs"]["text"] == "a lighthouse at dusk"


def test_a_subgraph_without_its_definition_is_named_as_such() -> None:
    gui = _pair_gui("flux1_krea_dev")
    gui["definitions"]["subgraphs"] = []
    with pytest.raises(JobError, match=r"node 200 \(1135e349-dce8-45e8-8905-aaa86675429b\) is a "
                                       r"subgraph whose definition is missing from the file"):
        convert(gui, OBJECT_INFO)
