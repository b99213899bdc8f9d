"""Input images piece by piece: checking, binding, uploading, job folders, taking images along."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from hotfolder.config.fields import Limits
from hotfolder.config.load import parse_config
from hotfolder.config.model import FolderConfig
from hotfolder.daemon.recent import recent_failed
from hotfolder.daemon.status import folder_counts
from hotfolder.errors import ConfigError, JobError
from hotfolder.fsutil import apply_mode
from hotfolder.job.companions import (
    job_image_files,
    sweep,
    take_along,
    take_companions,
)
from hotfolder.job.imagefiles import check_image, describe, mask_bytes, sniff
from hotfolder.job.images import bind, upload
from hotfolder.job.intake import read_job
from hotfolder.job.jobfolder import folder_not_ready, job_file_in
from hotfolder.job.parse import JobSpec, parse_bytes, parse_job
from hotfolder.job.prune import prune
from hotfolder.job.state import JobState
from hotfolder.job.watch import InboxWatcher
from hotfolder.jobfile import list_folder
from hotfolder.moves import move
from hotfolder.sim import SimServer
from hotfolder.sim.catalog import Catalog
from hotfolder.workflow.bindings import find_bindings
from hotfolder.workflow.check import check_workflow

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "comfy-api"
IMG2IMG = json.loads((ROOT / "config" / "workflows" / "sdxl_img2img.json").read_text())
UPSCALE = json.loads((ROOT / "config" / "workflows" / "upscale_4x.json").read_text())
JOB = "0123456789abcdef0123456789abcdef"


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (12, 8), mode: str = "RGB",
                color: Any = (1, 2, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def pixels(image: Image.Image) -> list[Any]:
    return [image.getpixel((x, y)) for y in range(image.height) for x in range(image.width)]


def folder_config(tmp_path: Path, **kwargs: Any) -> FolderConfig:
    folder = FolderConfig(name="f", root=tmp_path / "hot", template="t", **kwargs)
    for path in folder.all_dirs():
        path.mkdir(parents=True, exist_ok=True)
    return folder


def sleep(seconds: float) -> None:  # what the pipeline passes: a wait it could interrupt
    time.sleep(seconds)


def read_folder_job(job: Path, limits: Limits) -> JobSpec:
    """A job folder read as the pipeline reads a claimed one (from its processing/)."""
    folder = FolderConfig(name="f", root=job.parent, template="t", limits=limits,
                          dirs={"processing": job.parent})
    return read_job(folder, JobState(name=job.name, folder="f"), final=True)


# -- is it an image? ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_common_format_is_an_image(tmp_path, fmt):
    path = tmp_path / "picture"
    path.write_bytes(image_bytes(fmt))
    info = check_image(path, name="picture", max_bytes=10**6)
    assert (info.format, info.width, info.height) == (fmt, 12, 8)
    assert sniff(path.read_bytes()[:64]) == fmt


@pytest.mark.parametrize("content, words", [
    (b"a cat in a hat\n", "text ('a cat in a hat')"),
    (b"%PDF-1.4\n", "a PDF document"),
    (b"PK\x03\x04\x14\x00", "a ZIP archive"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00", "a HEIC/HEIF photo"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "an SVG"),
    (b"", "an empty file"),
    (bytes(range(200, 216)), "unrecognised data (it starts with c8 c9"),
])
def test_a_non_image_is_named_with_what_it_looks_like(tmp_path, content, words):
    path = tmp_path / "photo.png"
    path.write_bytes(content)
    with pytest.raises(JobError) as caught:
        check_image(path, name="photo.png", max_bytes=10**6)
    assert caught.value.kind == "invalid_image"
    assert caught.value.message.startswith("photo.png is not an image: it looks like ")
    assert words in caught.value.message
    assert describe(content[:64]) in caught.value.message


def test_truncated_big_and_linked_images_are_refused(tmp_path):
    whole = image_bytes(size=(64, 64))
    (tmp_path / "cut.png").write_bytes(whole[:50])
    with pytest.raises(JobError, match="starts like a PNG image but cannot be read"):
        check_image(tmp_path / "cut.png", name="cut.png", max_bytes=10**6)
    (tmp_path / "big.png").write_bytes(whole)
    with pytest.raises(JobError, match=re.escape("limits.max_image_bytes")) as caught:
        check_image(tmp_path / "big.png", name="big.png", max_bytes=10)
    assert caught.value.kind == "too_large"
    (tmp_path / "link.png").symlink_to(tmp_path / "big.png")
    with pytest.raises(JobError, match="never followed"):
        check_image(tmp_path / "link.png", name="link.png", max_bytes=10**6)
    os.link(tmp_path / "big.png", tmp_path / "hard.png")
    with pytest.raises(JobError, match="not a plain file"):
        check_image(tmp_path / "hard.png", name="hard.png", max_bytes=10**6)


# -- which node takes it ------------------------------------------------------------------------


def _files(tmp_path: Path, **refs: str) -> dict[str, tuple[str, Path]]:
    out = {}
    for ref, name in refs.items():
        path = tmp_path / name
        if not path.exists():
            path.write_bytes(image_bytes())
        out[ref.replace("__", " ")] = (name, path)
    return out


def test_the_image_goes_to_the_templates_loadimage_under_a_job_unique_name(tmp_path):
    workflow = json.loads(json.dumps(IMG2IMG))
    found = bind(workflow, _files(tmp_path, image="my photo (1).PNG"), overrides={},
                 job_id=JOB, max_bytes=10**6, template_name="img2img")
    [item] = found.bound
    assert item.targets == [("1", "image")] and item.kind == "image"
    assert item.upload_name == "01234567-my_photo_1.png"
    assert workflow["1"]["inputs"]["image"] == "hotfolder/01234567-my_photo_1.png"
    assert IMG2IMG["1"]["inputs"]["image"] == "example.png"  # the template is untouched
    assert find_bindings(IMG2IMG)["image"] == [("1", "image")]
    assert "width" not in find_bindings(IMG2IMG)  # the picture decides the size


def test_nodes_by_id_title_or_class_and_ambiguity(tmp_path):
    workflow = json.loads(json.dumps(IMG2IMG))
    workflow["20"] = {"class_type": "LoadImage", "inputs": {"image": "x.png"},
                      "_meta": {"title": "Style"}}
    with pytest.raises(JobError) as caught:
        bind(workflow, _files(tmp_path, image="a.png"), overrides={}, job_id=JOB,
             max_bytes=10**6, template_name="img2img")
    assert "2 LoadImage nodes" in caught.value.message
    assert "node 1 'Load Image' (LoadImage)" in caught.value.message
    assert "bindings.image" in caught.value.message
    found = bind(workflow, _files(tmp_path, Load__Image="a.png", Style="b.png"), overrides={},
                 job_id=JOB, max_bytes=10**6, template_name="img2img")
    assert [(b.file, b.targets) for b in found.bound] == [("a.png", [("1", "image")]),
                                                          ("b.png", [("20", "image")])]
    found = bind(workflow, _files(tmp_path, image="a.png"), overrides={"image": ("20.image",)},
                 job_id=JOB, max_bytes=10**6, template_name="img2img")
    assert found.bound[0].targets == [("20", "image")]
    with pytest.raises(JobError, match="has no image file input"):
        bind(workflow, _files(tmp_path, KSampler="a.png"), overrides={}, job_id=JOB,
             max_bytes=10**6, template_name="img2img")
    with pytest.raises(JobError, match="no LoadImageMask node"):
        bind(workflow, _files(tmp_path, mask="a.png"), overrides={}, job_id=JOB,
             max_bytes=10**6, template_name="img2img")


def test_one_file_for_two_nodes_is_one_upload(tmp_path):
    workflow = json.loads(json.dumps(IMG2IMG))
    workflow["20"] = {"class_type": "LoadImage", "inputs": {"image": "x.png"}}
    found = bind(workflow, _files(tmp_path, **{"1": "a.png", "20": "a.png"}), overrides={},
                 job_id=JOB, max_bytes=10**6, template_name="t")
    [item] = found.bound
    assert item.targets == [("1", "image"), ("20", "image")]


# -- uploads --------------------------------------------------------------------------------------


class FakeClient:
    def __init__(self, rename: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, str, bytes, dict[str, Any]]] = []
        self.rename = rename or {}

    def upload_image(self, data: bytes, *, name: str, subfolder: str = "") -> str:
        self.calls.append(("image", name, data, {}))
        return f"{subfolder}/{self.rename.get(name, name)}"

    def upload_mask(self, data: bytes, *, name: str, subfolder: str,
                    original: dict[str, str]) -> str:
        self.calls.append(("mask", name, data, dict(original)))
        return f"{subfolder}/{name}"


def _state(tmp_path: Path) -> JobState:
    return JobState(name="job.json", folder="f", job_id=JOB)


def test_uploaded_once_per_server_and_the_workflow_follows_each_servers_name(tmp_path):
    workflow = json.loads(json.dumps(UPSCALE))
    state = _state(tmp_path)
    images = bind(workflow, _files(tmp_path, image="a.png"), overrides={}, job_id=JOB,
                  max_bytes=10**6, template_name="upscale")
    saves: list[int] = []
    one = FakeClient(rename={"01234567-a.png": "01234567-a (1).png"})
    upload(one, "one", state, workflow, images, save=lambda: saves.append(1))
    upload(one, "one", state, workflow, images, save=lambda: saves.append(1))
    assert len(one.calls) == 1 and len(saves) == 1
    assert workflow["1"]["inputs"]["image"] == "hotfolder/01234567-a (1).png"
    two = FakeClient()
    upload(two, "two", state, workflow, images, save=lambda: None)
    assert workflow["1"]["inputs"]["image"] == "hotfolder/01234567-a.png"
    assert state.uploads == {"one": {"image:a.png": "hotfolder/01234567-a (1).png"},
                             "two": {"image:a.png": "hotfolder/01234567-a.png"}}
    again = JobState(**json.loads(json.dumps(state.record())))  # as a restart reads it
    upload(one, "one", again, workflow, images, save=lambda: None)
    assert len(one.calls) == 1


def _inpaint(channel: str) -> dict[str, Any]:
    workflow = json.loads(json.dumps(IMG2IMG))
    workflow["10"] = {"class_type": "LoadImageMask",
                      "inputs": {"image": "example.png", "channel": channel}}
    return workflow


def test_an_alpha_mask_goes_up_with_upload_mask_onto_the_jobs_image(tmp_path):
    (tmp_path / "photo.png").write_bytes(image_bytes(size=(3, 1)))
    mask = Image.new("L", (3, 1))
    for x, value in enumerate((0, 128, 255)):
        mask.putpixel((x, 0), value)
    mask.save(tmp_path / "mask.png")
    workflow = _inpaint("alpha")
    images = bind(workflow, _files(tmp_path, image="photo.png", mask="mask.png"), overrides={},
                  job_id=JOB, max_bytes=10**6, template_name="t")
    client = FakeClient()
    upload(client, "s", _state(tmp_path), workflow, images, save=lambda: None)
    (kind1, name1, _, _), (kind2, name2, sent, original) = client.calls
    assert (kind1, name1) == ("image", "01234567-photo.png")
    assert (kind2, name2) == ("mask", "01234567-mask-mask.png")
    assert original == {"filename": "01234567-photo.png", "subfolder": "hotfolder",
                        "type": "input"}
    with Image.open(io.BytesIO(sent)) as image:  # white (change) = transparent
        assert pixels(image.convert("RGBA").getchannel("A")) == [255, 127, 0]
    assert workflow["10"]["inputs"]["image"] == "hotfolder/01234567-mask-mask.png"


def test_a_colour_channel_mask_goes_up_as_it_is_and_sizes_must_match(tmp_path):
    (tmp_path / "photo.png").write_bytes(image_bytes(size=(4, 4)))
    (tmp_path / "mask.png").write_bytes(image_bytes(size=(2, 2), mode="L", color=255))
    workflow = _inpaint("red")
    images = bind(workflow, _files(tmp_path, image="photo.png", mask="mask.png"), overrides={},
                  job_id=JOB, max_bytes=10**6, template_name="t")
    client = FakeClient()
    upload(client, "s", _state(tmp_path), workflow, images, save=lambda: None)
    assert [c[0] for c in client.calls] == ["image", "image"]
    assert client.calls[1][2] == (tmp_path / "mask.png").read_bytes()
    workflow = _inpaint("alpha")
    images = bind(workflow, _files(tmp_path, image="photo.png", mask="mask.png"), overrides={},
                  job_id=JOB, max_bytes=10**6, template_name="t")
    mismatch = "mask.png is 2x2 pixels but the image photo.png is 4x4"
    with pytest.raises(JobError, match=re.escape(mismatch)):
        upload(FakeClient(), "s", _state(tmp_path), workflow, images, save=lambda: None)


def test_mask_with_transparency_keeps_it_an_opaque_one_is_read_as_black_and_white(tmp_path):
    editor = Image.new("RGBA", (2, 1), (9, 9, 9, 255))
    editor.putpixel((1, 0), (9, 9, 9, 0))
    editor.save(tmp_path / "editor.png")
    data, size = mask_bytes((tmp_path / "editor.png").read_bytes(), "editor.png", alpha=True)
    with Image.open(io.BytesIO(data)) as image:
        assert pixels(image.getchannel("A")) == [255, 0] and size == (2, 1)
    Image.new("RGBA", (2, 1), (255, 255, 255, 255)).save(tmp_path / "white.png")
    data, _ = mask_bytes((tmp_path / "white.png").read_bytes(), "white.png", alpha=True)
    with Image.open(io.BytesIO(data)) as image:
        assert pixels(image.getchannel("A")) == [0, 0]


def test_the_simulators_upload_mask_composites_like_comfyui(make_sim):
    sim: SimServer = make_sim()
    session = requests.Session()
    photo = image_bytes(size=(2, 1), color=(50, 60, 70))
    up = session.post(f"{sim.url}/upload/image", files={"image": ("p.png", photo)},
                      data={"subfolder": "hotfolder"}).json()
    assert up == {"name": "p.png", "subfolder": "hotfolder", "type": "input"}
    mask = Image.new("LA", (2, 1))
    mask.putalpha(Image.frombytes("L", (2, 1), bytes([255, 0])))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    ref = json.dumps({"filename": "p.png", "subfolder": "hotfolder", "type": "input"})
    answer = session.post(f"{sim.url}/upload/mask", files={"image": ("m.png", buffer.getvalue())},
                          data={"subfolder": "hotfolder", "original_ref": ref})
    assert answer.json() == {"name": "m.png", "subfolder": "hotfolder", "type": "input"}
    with Image.open(Path(sim.input_dir) / "hotfolder" / "m.png") as composite:
        assert pixels(composite) == [(50, 60, 70, 255), (50, 60, 70, 0)]
    # the same mask again is not a duplicate of the composite: a new name, as in ComfyUI
    again = session.post(f"{sim.url}/upload/mask", files={"image": ("m.png", buffer.getvalue())},
                         data={"subfolder": "hotfolder", "original_ref": ref})
    assert again.json()["name"] == "m (1).png"
    # a missing original: 200 and the name, but nothing written (ComfyUI ignores the failure)
    gone = json.dumps({"filename": "nope.png", "type": "input"})
    answer = session.post(f"{sim.url}/upload/mask", files={"image": ("n.png", b"x")},
                          data={"original_ref": gone})
    assert answer.status_code == 200 and not (Path(sim.input_dir) / "n.png").exists()
    answer = session.post(f"{sim.url}/upload/mask", files={"image": ("o.png", b"x")})
    assert answer.status_code == 500  # no original_ref at all: an unhandled error
    session.close()


# -- templates and config -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sdxl_img2img.json", "upscale_4x.json"])
def test_templates_use_real_classes_and_inputs(name):
    workflow = json.loads((ROOT / "config" / "workflows" / name).read_text())
    assert (ROOT / "hotfolder" / "templates" / name).read_text() == \
        (ROOT / "config" / "workflows" / name).read_text()
    full = json.loads((FIXTURES / "object_info_full.json").read_text())
    problems = check_workflow(workflow, full, name=name)
    # the captured server had no upscale models installed; the simulator lists the usual ones
    assert all("model_name" in p and "offers no choices" in p for p in problems), problems
    assert check_workflow(workflow, Catalog(str(ROOT)).all(), name=name) == []
    assert find_bindings(workflow)["image"] == [("1", "image")]


def _config(tmp_path: Path, template: dict[str, Any], **folder: Any) -> dict[str, Any]:
    (tmp_path / "t.json").write_text(json.dumps(template))
    return {"servers": ["http://127.0.0.1:9"], "workflows": {"t": "t.json"},
            "folders": [{"root": "hot", "workflow": "t", **folder}]}


def test_per_file_needs_a_loadimage_and_makes_images_job_extensions(tmp_path):
    txt2img = json.loads((ROOT / "config" / "workflows" / "sdxl_txt2img.json").read_text())
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(tmp_path, txt2img, image_mode="per-file"), base=tmp_path)
    assert caught.value.problems == [
        "folders[0].image_mode: per-file needs a workflow with a LoadImage node (or "
        "bindings.image) to take each image; 't' has none"]
    with pytest.raises(ConfigError, match=r"folders\[0\].image_mode: expected one of off, "):
        parse_config(_config(tmp_path, UPSCALE, image_mode="yes"), base=tmp_path)
    config = parse_config(_config(tmp_path, UPSCALE, image_mode="per-file"), base=tmp_path)
    assert {".png", ".jpg", ".webp", ".txt"} <= set(config.folders[0].extensions)
    gui = {"nodes": [{"id": 1, "type": "LoadImage", "widgets_values": ["x.png", "image"]}],
           "links": []}
    config = parse_config(_config(tmp_path, gui, image_mode="per-file"), base=tmp_path)
    assert config.folders[0].image_mode == "per-file"
    assert config.folders[0].image_wait_seconds == 10
    config = parse_config(_config(tmp_path, gui, image_wait_seconds=60), base=tmp_path)
    assert config.folders[0].image_wait_seconds == 60
    with pytest.raises(ConfigError, match=r"folders\[0\].image_wait_seconds: expected a number"):
        parse_config(_config(tmp_path, gui, image_wait_seconds="1m"), base=tmp_path)
    data = _config(tmp_path, UPSCALE)
    data["workflows"]["t"] = {"path": "t.json", "bindings": {"image": "1.image",
                                                             "mask": "1.image"}}
    assert parse_config(data, base=tmp_path).templates["t"].bindings["image"] == ("1.image",)


def test_the_images_field_of_a_spec(tmp_path):
    spec = parse_bytes("a.json", json.dumps({"prompt": "x", "images": "photo.png"}).encode())
    assert spec.images == {"image": "photo.png"}
    spec = parse_bytes("a.yaml", b"images:\n  Load Image: a.png\n  mask: b.webp\n")
    assert spec.images == {"Load Image": "a.png", "mask": "b.webp"}
    for bad, words in [("../etc/passwd", "without a path"), ("sub/a.png", "without a path"),
                       (".hidden.png", "hidden"), (3, "expected a file name")]:
        with pytest.raises(JobError, match="images") as caught:
            parse_bytes("a.json", json.dumps({"images": {"image": bad}}).encode())
        assert words in caught.value.message
    with pytest.raises(JobError, match="images: expected a file name"):
        parse_bytes("a.json", json.dumps({"images": ["a.png"]}).encode())
    (tmp_path / "pic.webp").write_bytes(image_bytes("WEBP"))
    assert parse_job(tmp_path / "pic.webp").kind == "image"


# -- job folders ----------------------------------------------------------------------------------


def test_a_job_folder_and_what_makes_it_refused(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    assert folder_not_ready(job, Limits()) == "it is empty"
    (job / "photo.png").write_bytes(image_bytes())
    assert "no job file" in folder_not_ready(job, Limits())
    (job / "notes.txt").write_text("a prompt")
    assert folder_not_ready(job, Limits()) is None
    spec = read_folder_job(job, Limits())
    assert (spec.kind, spec.fields["prompt"], spec.images) == ("prompt", "a prompt",
                                                               {"image": "photo.png"})
    (job / "photo.png.part").write_bytes(b"")
    assert "still being copied" in folder_not_ready(job, Limits())
    (job / "photo.png.part").unlink()
    (job / "link.png").symlink_to(job / "photo.png")
    assert folder_not_ready(job, Limits()) == ("'link.png' in it is a symbolic link: links are "
                                               "never followed")
    with pytest.raises(JobError, match=re.escape("refused: 'link.png' in it is a symbolic link")):
        read_folder_job(job, Limits())
    (job / "link.png").unlink()
    os.mkfifo(job / "pipe")
    assert "not a regular file" in folder_not_ready(job, Limits())
    (job / "pipe").unlink()
    os.link(job / "photo.png", tmp_path / "elsewhere.png")
    assert "hard link" in folder_not_ready(job, Limits())
    (tmp_path / "elsewhere.png").unlink()
    (job / "sub").mkdir()
    assert "a job folder holds files only" in folder_not_ready(job, Limits())


def test_job_file_choice_and_image_mapping_in_a_folder(tmp_path):
    assert job_file_in({"job.json": 1, "a.txt": 1}) == ("job.json", None)
    assert "both job.json and prompt.txt" in job_file_in({"job.json": 1, "prompt.txt": 1})[1]
    assert job_file_in({"only.yaml": 1, "p.png": 1}) == ("only.yaml", None)
    assert "2 possible job files" in job_file_in({"a.txt": 1, "b.json": 1})[1]
    job = tmp_path / "j"
    job.mkdir()
    (job / "a.png").write_bytes(image_bytes())
    (job / "b.png").write_bytes(image_bytes())
    (job / "job.json").write_text(json.dumps({"prompt": "x"}))
    with pytest.raises(JobError, match="holds 2 images"):
        read_folder_job(job, Limits())
    (job / "job.json").write_text(json.dumps({"prompt": "x", "images": {"1": "c.png"}}))
    with pytest.raises(JobError, match=re.escape("job.json names c.png, not in the job folder")):
        read_folder_job(job, Limits())
    (job / "job.json").write_text(json.dumps({"prompt": "x", "stepz": 1}))
    with pytest.raises(JobError, match=r"^job.json: the job spec is invalid"):
        read_folder_job(job, Limits())
    with pytest.raises(JobError, match=re.escape("limits.max_folder_files")):
        read_folder_job(job, Limits(max_folder_files=2))
    with pytest.raises(JobError, match=re.escape("limits.max_folder_bytes")):
        read_folder_job(job, Limits(max_folder_bytes=100))


def test_watcher_takes_a_job_folder_once_its_files_settle(tmp_path):
    folder = folder_config(tmp_path, settle_seconds=1.0)
    ready: list[Path] = []
    watcher = InboxWatcher([folder], lambda f, p, d, how: ready.append(p))
    job = folder.inbox / "job"
    job.mkdir()
    (job / "prompt.txt").write_text("x")
    watcher.rescan()
    watcher.tick(now=100.0)
    watcher.tick(now=100.6)
    with open(job / "photo.png", "wb") as fh:  # a file inside changes: settling starts over
        fh.write(image_bytes())
    watcher.tick(now=101.2)
    assert ready == []
    watcher.tick(now=102.0)
    assert ready == []
    watcher.tick(now=102.3)
    assert ready == [job]


# -- images taken from the inbox -----------------------------------------------------------------


def test_named_images_are_taken_once_settled_and_leave_with_the_job(tmp_path):
    folder = folder_config(tmp_path, settle_seconds=0.05)
    (folder.inbox / "cat.png").write_bytes(image_bytes())
    (folder.processing / "cat.json").write_text("{}")
    state = JobState(name="cat.json", folder="f", source="cat.json")
    base = take_companions(folder, state, {"cat.png"}, sleep)
    assert (base / "cat.png").is_file() and not (folder.inbox / "cat.png").exists()
    assert base.name == ".cat.json.inputs"
    assert take_companions(folder, state, {"cat.png"}, sleep) == base  # resumed: taken
    (folder.done / "cat.png").write_bytes(b"an older one")
    (folder.processing / "cat.json").rename(folder.done / "cat.json")
    moved = take_along(folder, state, folder.done)
    assert [p.name for p in moved] == ["cat-2.png"] and not base.exists()


def test_a_named_image_that_never_comes_fails_the_job(tmp_path):
    folder = folder_config(tmp_path, settle_seconds=0.05)
    state = JobState(name="j.json", folder="f", source="j.json")
    (folder.inbox / "other.png").write_bytes(image_bytes())
    with pytest.raises(JobError) as caught:
        take_companions(folder, state, {"gone.png"}, sleep, wait_seconds=0.2)
    assert caught.value.kind == "missing_image"
    assert caught.value.message.startswith("the job names gone.png, which is not in the inbox")
    assert "images there: other.png" in caught.value.message
    (folder.inbox / "ln.png").symlink_to(folder.inbox / "other.png")
    with pytest.raises(JobError, match=re.escape("refused: 'ln.png' in it is a symbolic link")):
        take_companions(folder, state, {"ln.png"}, sleep, wait_seconds=0.2)


def test_an_image_arriving_after_its_spec_is_waited_for(tmp_path):
    folder = folder_config(tmp_path, settle_seconds=0.1)
    state = JobState(name="j.json", folder="f", source="j.json")
    timer = threading.Timer(0.3, lambda: (folder.inbox / "late.png").write_bytes(image_bytes()))
    timer.start()
    base = take_companions(folder, state, {"late.png"}, sleep, wait_seconds=5)
    timer.join()
    assert (base / "late.png").is_file()


def test_per_file_folders_do_not_lend_images_to_specs(tmp_path):
    folder = folder_config(tmp_path, image_mode="per-file")
    (folder.processing / "j.json").write_text("{}")
    spec = parse_bytes("j.json", json.dumps({"images": "a.png"}).encode())
    with pytest.raises(JobError, match=r"image_mode: per-file.*put the job file and its images"):
        job_image_files(folder, JobState(name="j.json", folder="f"), spec, sleep)


def test_images_left_behind_by_a_crash_follow_their_job_at_start(tmp_path):
    folder = folder_config(tmp_path)
    for name, to in (("a.json", "done"), ("b.json", "failed"), ("c.json", "done")):
        base = JobState.inputs_path(folder, name)
        base.mkdir()
        (base / f"{name}.png").write_bytes(b"x")
        (base / ".inputs.json").write_text(json.dumps({"job": name, "to": to}))
    (folder.processing / "c.json").write_text("{}")  # still running: left alone
    assert sweep(folder) == 2
    assert (folder.done / "a.json.png").exists() and (folder.failed / "b.json.png").exists()
    assert JobState.inputs_path(folder, "c.json").is_dir()


def test_status_counts_job_folders_and_not_images_taken_along(tmp_path):
    folder = folder_config(tmp_path)
    (folder.inbox / "later").mkdir()
    (folder.done / "cat.json").write_text("{}")
    (folder.done / "cat.png").write_bytes(b"x")
    counts = folder_counts(folder)
    assert (counts["waiting"], counts["done"]) == (1, 1)


# -- moving job folders ---------------------------------------------------------------------------


def test_a_job_folder_moves_whole_also_across_file_systems(tmp_path, monkeypatch):
    src = tmp_path / "processing" / "job"
    src.mkdir(parents=True)
    (src / "job.json").write_text("{}")
    (src / "link").symlink_to("/etc/passwd")
    (tmp_path / "done" / "job").mkdir(parents=True)
    (tmp_path / "done" / "job" / "x").write_text("older")
    assert move(src, tmp_path / "done").name == "job-2"
    real_rename = os.rename

    def rename(a: Any, b: Any) -> None:
        if Path(a).name == "job-2" and Path(b).parent.name == "failed":
            raise OSError(errno.EXDEV, "cross-device link")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    final = move(tmp_path / "done" / "job-2", tmp_path / "failed")
    assert final == tmp_path / "failed" / "job-2"
    assert (final / "job.json").read_text() == "{}"
    assert os.readlink(final / "link") == "/etc/passwd"  # copied as a link, never followed
    assert not (tmp_path / "done" / "job-2").exists()
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["job"]
    apply_mode(final, 0o640)
    assert final.stat().st_mode & 0o777 == 0o750
    assert (final / "job.json").stat().st_mode & 0o777 == 0o640


def test_images_bound_for_a_job_folder_and_a_per_file_job(tmp_path):
    folder = folder_config(tmp_path)
    job = folder.processing / "job"
    job.mkdir()
    spec = parse_bytes("job.json", json.dumps({"images": "p.png"}).encode())
    files = job_image_files(folder, JobState(name="job", folder="f"), spec, sleep)
    assert files == {"image": ("p.png", job / "p.png")}
    (folder.processing / "pic-2.png").write_bytes(image_bytes())
    spec = parse_job(folder.processing / "pic-2.png")
    state = JobState(name="pic-2.png", folder="f", source="pic.png")
    assert job_image_files(folder, state, spec, sleep) == \
        {"image": ("pic.png", folder.processing / "pic-2.png")}
    assert list_folder(job, 10).files == {}


def test_prune_removes_old_job_folders_too(tmp_path):
    folder = folder_config(tmp_path, prune_days=7)
    old, new = folder.done / "old", folder.failed / "new"
    for job in (old, new):
        job.mkdir()
        (job / "prompt.txt").write_text("x")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert prune(folder) == 1
    assert not old.exists() and new.is_dir()


def test_an_image_swapped_for_a_link_after_its_check_is_not_sent(tmp_path):
    workflow = json.loads(json.dumps(UPSCALE))
    images = bind(workflow, _files(tmp_path, image="a.png"), overrides={}, job_id=JOB,
                  max_bytes=10**6, template_name="upscale")
    (tmp_path / "secret").write_bytes(b"not for the server")
    (tmp_path / "a.png").unlink()
    (tmp_path / "a.png").symlink_to(tmp_path / "secret")
    client = FakeClient()
    with pytest.raises(JobError, match="never followed"):
        upload(client, "s", _state(tmp_path), workflow, images, save=lambda: None)
    assert client.calls == []


def test_a_failed_jobs_file_is_the_job_not_an_image_it_took_along(tmp_path):
    folder = folder_config(tmp_path)
    (folder.failed / "cat.png").write_bytes(b"x")
    (folder.failed / "cat.json").write_text("{}")
    (folder.failed / "cat.error.json").write_text(json.dumps({"job": "cat.json", "error": "e"}))
    [failed] = recent_failed(folder, 5)
    assert failed["file"] == "cat.json"
