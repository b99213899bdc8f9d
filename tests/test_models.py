"""What a workflow loads (workflow/models.py), what a waiting file asks for before it is
claimed (job/peek.py), and what the pool remembers of each server's models (comfy/pool.py)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from harness import ROOT

from hotfolder.comfy.pool import ServerPool
from hotfolder.config.load import parse_config
from hotfolder.config.model import ComfyConfig
from hotfolder.config.servers import ServerConfig
from hotfolder.job.parse import parse_bytes
from hotfolder.job.peek import Peeker
from hotfolder.workflow.models import models_of

WORKFLOWS = ROOT / "config" / "workflows"
PAIRS = Path(__file__).parent / "fixtures" / "gui2api"
SDXL = frozenset({"sd_xl_base_1.0.safetensors"})
FLUX = frozenset({"flux1-dev.safetensors"})


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_models_of_the_shipped_templates():
    assert models_of(_load(WORKFLOWS / "sdxl_txt2img.json")) == SDXL
    assert models_of(_load(WORKFLOWS / "sdxl_img2img.json")) == SDXL
    assert models_of(_load(WORKFLOWS / "upscale_4x.json")) == {"RealESRGAN_x4plus.pth"}


def test_models_of_converted_workflows_every_loader_and_nothing_else():
    flux = _load(PAIRS / "flux1_krea_dev" / "api.json")
    loaders = {n["class_type"]: n["inputs"] for n in flux.values()}
    assert models_of(flux) == {loaders["DualCLIPLoader"]["clip_name1"],
                               loaders["DualCLIPLoader"]["clip_name2"],
                               loaders["UNETLoader"]["unet_name"],
                               loaders["VAELoader"]["vae_name"]}  # not weight_dtype, type
    qwen = _load(PAIRS / "image_qwen_image_instantx_controlnet" / "api.json")
    names = models_of(qwen)
    for cls, key in [("ControlNetLoader", "control_net_name"),
                     ("LoraLoaderModelOnly", "lora_name"), ("CLIPLoader", "clip_name")]:
        assert next(n["inputs"][key] for n in qwen.values() if n["class_type"] == cls) in names
    assert models_of(_load(PAIRS / "api_kling_v3_t2i" / "api.json")) == frozenset()


def test_links_and_images_are_not_models():
    workflow = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["9", 0]}},
                "2": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
                "3": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
                "4": {"class_type": "KSampler", "inputs": {"sampler_name": "euler"}}}
    assert models_of(workflow) == {"4x.pth"}


def _folders(tmp_path: Path):
    (tmp_path / "t.json").write_text((WORKFLOWS / "sdxl_txt2img.json").read_text())
    (tmp_path / "u.json").write_text((WORKFLOWS / "upscale_4x.json").read_text())
    config = parse_config({"workflows": {"sdxl": "t.json", "upscale": "u.json"},
                           "folders": [{"root": "hot", "workflow": "sdxl", "priority": 2,
                                        "limits": {"max_priority": 3, "max_job_bytes": 4096}}]},
                          base=tmp_path)
    folder = config.folders[0]
    folder.inbox.mkdir(parents=True)
    return Peeker(config.templates), folder


def test_a_waiting_file_is_read_for_its_models_and_priority(tmp_path):
    peeker, folder = _folders(tmp_path)

    def look(name: str, content: str | bytes):
        path = folder.inbox / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        peek = peeker.look(folder, path)
        return peek.models, peek.priority

    assert look("a.txt", "a fox") == (SDXL, 2)
    assert look("b.json", json.dumps({"prompt": "x", "priority": 1})) == (SDXL, 3)
    assert look("c.yaml", "prompt: x\npriority: 99\n") == (SDXL, 5)  # held to the range
    assert look("d.json", json.dumps({"workflow": "upscale"}))[0] == {"RealESRGAN_x4plus.pth"}
    assert look("e.json", json.dumps({"set": {"Load Checkpoint.ckpt_name": "other.ckpt"}})) \
        == (frozenset({"other.ckpt"}), 2)
    assert look("f.json", json.dumps({"set": {"KSampler.steps": 4}}))[0] == SDXL
    assert look("g.json", json.dumps({"prompts": ["a"], "matrix": {
        "CheckpointLoaderSimple.ckpt_name": ["x", "y"]}}))[0] is None
    assert look("h.json", (WORKFLOWS / "upscale_4x.json").read_text())[0] == \
        {"RealESRGAN_x4plus.pth"}
    assert look("i.json", "{not json") == (None, 2)
    assert look("j.json", json.dumps({"prompt": "x" * 5000})) == (None, 2)  # over max_job_bytes
    assert look("k.csv", "prompt\na\n") == (None, 2)
    assert look("l.json", json.dumps({"set": {"Nope.ckpt_name": "x"}}))[0] is None
    os.symlink(folder.inbox / "b.json", folder.inbox / "m.json")
    assert peeker.look(folder, folder.inbox / "m.json").models is None  # never followed


def test_a_waiting_file_is_read_once_while_it_is_unchanged(tmp_path):
    peeker, folder = _folders(tmp_path)
    reads = []
    real = peeker._read
    peeker._read = lambda *args: reads.append(args) or real(*args)
    path = folder.inbox / "a.json"
    path.write_text(json.dumps({"prompt": "x", "priority": 1}))
    for _ in range(3):
        assert peeker.look(folder, path).priority == 3
    assert len(reads) == 1
    path.write_text(json.dumps({"prompt": "x", "priority": 0, "seed": 12}))
    assert peeker.look(folder, path).priority == 2
    assert len(reads) == 2


def test_a_job_priority_outside_the_folder_range_fails_naming_the_limit():
    from hotfolder.config.fields import Limits
    from hotfolder.errors import JobError

    limits = Limits(min_priority=-1, max_priority=2)
    assert parse_bytes("a.json", b'{"prompt": "x", "priority": 2}', limits).priority == 2
    assert parse_bytes("a.json", b'{"prompt": "x", "count": 2, "priority": -1}',
                       limits).priority == -1
    for text, words in [(b'{"prompt": "x", "priority": 3}', "limits.max_priority"),
                        (b'{"prompt": "x", "priority": -2}', "limits.min_priority"),
                        (b'{"prompt": "x", "priority": "high"}', "expected a whole number")]:
        try:
            parse_bytes("a.json", text, limits)
        except JobError as exc:
            assert words in exc.message
        else:
            raise AssertionError(f"{text!r} was taken")
    try:
        parse_bytes("a.jsonl", b'{"prompt": "x", "priority": 1}\n', limits)
    except JobError as exc:
        assert "priority applies to a whole job" in exc.message
    else:
        raise AssertionError("a run's priority was taken")


def test_the_pool_remembers_each_servers_models_and_puts_rush_prompts_in_front():
    pool = ServerPool([ServerConfig(url="http://127.0.0.1:9", name="gpu")], ComfyConfig(),
                      threading.Event())
    gpu = pool.servers[0]
    assert gpu.models is None
    assert pool.queued(gpu, SDXL) is None  # nothing was known loaded
    assert pool.queued(gpu, SDXL) is False
    assert pool.queued(gpu, frozenset({"flux.safetensors"})) is True
    assert gpu.model_switches == 1
    assert pool.describe()[0]["models"] == ["flux.safetensors"]
    assert pool.queueing(gpu, "p1", 0) is False
    assert pool.queueing(gpu, "p2", 0) is False
    assert pool.queueing(gpu, "rush", 5) is True  # ahead of p1 and p2
    assert pool.queueing(gpu, "p3", 5) is True  # ahead of p1, p2 (not of the rush)
    pool.forget_prompt(gpu, "p1")
    pool.forget_prompt(gpu, "p2")
    assert pool.queueing(gpu, "p4", 5) is False
    gpu.comebacks += 1  # it was down: it may have restarted with nothing loaded
    assert gpu.models is None


def test_a_slot_given_makes_the_job_s_models_the_servers_upcoming_ones():
    pool = ServerPool([ServerConfig(url="http://127.0.0.1:9", name="gpu")], ComfyConfig(),
                      threading.Event())
    gpu = pool.servers[0]
    slot = pool.reserve(gpu, SDXL)
    assert slot is not None and gpu.models is None and gpu.upcoming == SDXL
    assert pool.free() == ([(gpu, None)], [])
    gpu.comebacks += 1  # it may have restarted: nothing is known
    assert gpu.upcoming is None


def test_free_names_the_busy_servers_models_only_when_a_server_is_free():
    pool = ServerPool([ServerConfig(url="http://127.0.0.1:9", name="a"),
                       ServerConfig(url="http://127.0.0.1:9", name="b")],
                      ComfyConfig(max_in_flight=1), threading.Event())
    a, b = pool.servers
    assert pool.reserve(a, SDXL) is not None
    assert pool.free() == ([(b, None)], [SDXL])  # what the choice weighs a waiting job with
    assert pool.reserve(b, FLUX) is not None
    assert pool.free() == ([], [])  # nothing to choose: the scan stops there


def test_one_slot_beyond_max_in_flight_for_a_job_above_every_prompt_there():
    pool = ServerPool([ServerConfig(url="http://127.0.0.1:9", name="gpu")],
                      ComfyConfig(max_in_flight=2), threading.Event())
    gpu = pool.servers[0]
    slots = [pool.reserve(gpu, SDXL, 0), pool.reserve(gpu, SDXL, 3)]
    assert all(slots) and gpu.in_flight == 2
    pool.queueing(gpu, "p1", 0)
    # a slot holder not queued yet: its priority is not known, so no rush slot
    assert pool.free() == ([], []) and pool.reserve(gpu, SDXL, 9) is None
    pool.queueing(gpu, "p2", 3)
    assert pool.free() == ([(gpu, 4)], [])
    assert pool.free(priority=4) == ([(gpu, 4)], [])
    # the highest priority waiting may not take the rush slot: the server counts as busy
    assert pool.free(priority=3) == ([], [])
    assert pool.reserve(gpu, SDXL, 3) is None  # not above every prompt there
    rush = pool.reserve(gpu, FLUX, 4)
    assert rush is not None and gpu.in_flight == 3
    assert pool.reserve(gpu, FLUX, 9) is None  # one rush slot a server
    assert pool.queueing(gpu, "rush", 4) is True  # in front
    assert pool.free() == ([], []) and gpu.upcoming == FLUX
    rush.cancel()
    pool.forget_prompt(gpu, "rush")
    assert gpu.in_flight == 2 and pool.free() == ([(gpu, 4)], [])
    pool.forget_prompt(gpu, "p2")
    pool.release(gpu)
    assert pool.free() == ([(gpu, None)], [])
