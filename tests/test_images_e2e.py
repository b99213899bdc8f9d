"""Jobs that bring images, end to end: the real daemon process, the simulator, files on disk.

Each test drops files the way a person does and checks what the simulator received (the
uploaded file in its input folder, the prompt embedded in each output) and where every file
ended up.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from harness import ROOT, HotFolder, make_config, png_prompt, wait_for
from PIL import Image

from hotfolder.sim import SimServer

WORKFLOWS = ROOT / "config" / "workflows"


def png_bytes(width: int = 24, height: int = 16, color: tuple[int, ...] = (200, 40, 40),
              mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format=fmt)
    return buffer.getvalue()


def image_folder(hot: HotFolder, name: str, template: str, **folder: Any) -> None:
    """Point the test's hot folder at one of the shipped image templates."""
    shutil.copy(WORKFLOWS / template, hot.base / "workflows" / template)
    hot.config["workflows"][name] = f"workflows/{template}"
    hot.config["folders"][0].update(workflow=name, **folder)


def uploads(sim: SimServer) -> dict[str, bytes]:
    """What hotfolder put into the simulator's input folder, by the name LoadImage takes."""
    root = Path(sim.input_dir)
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in (root / "hotfolder").rglob("*") if p.is_file()}


def outputs(hot: HotFolder, stem: str) -> list[Path]:
    return sorted(hot.dir("outbox").glob(f"{stem}_*.png"))


def events(hot: HotFolder, name: str) -> list[dict[str, Any]]:
    return [e for e in hot.events() if e.get("event") == name]


def test_job_folder_with_an_image_runs_img2img_and_moves_as_one(hot, sim):
    image_folder(hot, "img2img", "sdxl_img2img.json", defaults={"denoise": 0.55})
    hot.start()
    photo = png_bytes()
    staging = hot.base / "portrait"  # built elsewhere, then moved in, as a file manager does
    staging.mkdir()
    (staging / "photo.png").write_bytes(photo)
    (staging / "job.json").write_text(json.dumps({"prompt": "the same person as an oil "
                                                  "painting", "seed": 5}))
    staging.rename(hot.dir("inbox") / "portrait")
    assert hot.finished("portrait") == "done"
    done = hot.dir("done") / "portrait"
    assert sorted(p.name for p in done.iterdir()) == ["job.json", "photo.png"]
    sidecar = hot.sidecar("portrait")
    [entry] = sidecar["inputs"]
    assert entry["file"] == "photo.png" and entry["kind"] == "image" and entry["nodes"] == ["1"]
    assert (entry["format"], entry["width"], entry["height"]) == ("PNG", 24, 16)
    uploaded = entry["uploaded"]
    assert uploaded.startswith("hotfolder/") and uploaded.endswith("-photo.png")
    assert uploads(sim) == {uploaded: photo}  # the very bytes, once, under the job's own name
    graph = png_prompt(outputs(hot, "portrait")[0])
    assert graph["1"]["inputs"]["image"] == uploaded
    assert graph["5"]["inputs"]["text"] == "the same person as an oil painting"
    assert graph["7"]["inputs"]["denoise"] == 0.55 and graph["7"]["inputs"]["seed"] == 5
    assert not hot.in_processing()


def test_job_folder_written_in_place_is_taken_only_once_settled(hot, sim):
    image_folder(hot, "img2img", "sdxl_img2img.json", settle_seconds=0.6)
    hot.start()
    folder = hot.dir("inbox") / "slow"
    folder.mkdir()
    (folder / "prompt.txt").write_text("a cathedral in fog")
    photo = png_bytes(32, 32)
    with open(folder / "photo.png", "wb") as fh:  # a slow copy: pauses shorter than settle
        for start in range(0, len(photo), 20):
            fh.write(photo[start:start + 20])
            fh.flush()
            time.sleep(0.05)
    assert hot.finished("slow") == "done"
    [entry] = hot.sidecar("slow")["inputs"]
    assert uploads(sim)[entry["uploaded"]] == photo  # the whole file, not a part of it
    assert hot.sidecar("slow")["prompt"] == "a cathedral in fog"


def test_spec_naming_an_image_takes_it_along(hot, sim):
    image_folder(hot, "img2img", "sdxl_img2img.json")
    hot.start()
    photo = png_bytes(20, 20, (10, 200, 10))
    hot.drop("cat.png", photo)
    hot.drop("cat.json", json.dumps({"prompt": "a cat, ukiyo-e print",
                                     "images": {"Load Image": "cat.png"}}))  # by title
    assert hot.finished("cat.json") == "done"
    assert (hot.dir("done") / "cat.png").read_bytes() == photo  # moved along with the job
    assert not (hot.dir("inbox") / "cat.png").exists()
    [entry] = hot.sidecar("cat")["inputs"]
    assert entry["file"] == "cat.png" and entry["nodes"] == ["1"]
    assert uploads(sim) == {entry["uploaded"]: photo}
    assert png_prompt(outputs(hot, "cat")[0])["1"]["inputs"]["image"] == entry["uploaded"]
    assert not hot.in_processing()  # no hidden folder of taken images left behind


def test_spec_naming_a_missing_image_fails_and_says_which(hot, sim):
    image_folder(hot, "img2img", "sdxl_img2img.json", image_wait_seconds=1)
    hot.start()
    hot.drop("ghost.json", json.dumps({"prompt": "x", "images": "ghost.png"}))
    assert hot.finished("ghost.json", timeout=40) == "failed"
    error = hot.error("ghost.json")
    assert error["kind"] == "missing_image"
    assert "ghost.png" in error["error"] and "not in the inbox" in error["error"]
    assert "waited 1 s" in error["error"]
    assert uploads(sim) == {}


def test_per_file_folder_makes_each_image_a_job(hot, sim):
    image_folder(hot, "upscale", "upscale_4x.json", image_mode="per-file")
    hot.start()
    small = png_bytes(16, 12, (0, 0, 255))
    hot.drop("tiny.png", small)
    hot.drop("snap.jpg", png_bytes(30, 20, fmt="JPEG"))
    hot.drop("fox.txt", "a prompt in an upscale folder has no place to go")
    assert hot.finished("tiny.png") == "done"
    assert hot.finished("snap.jpg") == "done"
    assert hot.finished("fox.txt") == "failed"
    assert "no place for the field 'prompt'" in hot.error("fox.txt")["error"]
    [upscaled] = outputs(hot, "tiny")
    with Image.open(upscaled) as image:
        assert image.size == (64, 48)  # ImageUpscaleWithModel: 4x
    sidecar = hot.sidecar("tiny")
    assert sidecar["kind"] == "image" and sidecar["workflow"] == "upscale"
    assert uploads(sim)[sidecar["inputs"][0]["uploaded"]] == small
    graph = png_prompt(upscaled)
    assert graph["2"]["inputs"]["model_name"] == "RealESRGAN_x4plus.pth"
    assert hot.sidecar("snap")["inputs"][0]["format"] == "JPEG"
    assert (hot.dir("done") / "tiny.png").read_bytes() == small


@pytest.mark.parametrize("content, looks_like", [
    (b"hello, this is not a picture\n", "text"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
])
def test_a_non_image_is_rejected_before_any_upload(hot, sim, content, looks_like):
    image_folder(hot, "upscale", "upscale_4x.json", image_mode="per-file")
    hot.start()
    hot.drop("holiday.png", content)
    assert hot.finished("holiday.png") == "failed"
    error = hot.error("holiday.png")
    assert error["kind"] == "invalid_image"
    assert "holiday.png is not an image" in error["error"] and looks_like in error["error"]
    assert uploads(sim) == {} and sim.stats()["prompts_received"] == 0


def test_a_truncated_image_in_a_job_folder_fails_the_folder(hot, sim):
    image_folder(hot, "img2img", "sdxl_img2img.json")
    hot.start()
    staging = hot.base / "broken"
    staging.mkdir()
    (staging / "prompt.txt").write_text("a lake")
    (staging / "photo.png").write_bytes(png_bytes()[:40])  # the header, then nothing
    staging.rename(hot.dir("inbox") / "broken")
    assert hot.finished("broken") == "failed"
    error = json.loads((hot.dir("failed") / "broken.error.json").read_text())
    assert "photo.png" in error["error"] and "cannot be read" in error["error"]
    assert (hot.dir("failed") / "broken" / "photo.png").exists()
    assert uploads(sim) == {}


def test_symlink_in_a_job_folder_is_refused_until_removed(hot, sim, tmp_path):
    image_folder(hot, "img2img", "sdxl_img2img.json")
    hot.start()
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    staging = hot.base / "sneaky"
    staging.mkdir()
    (staging / "prompt.txt").write_text("a garden")
    (staging / "photo.png").symlink_to(secret)
    staging.rename(hot.dir("inbox") / "sneaky")
    wait_for(lambda: [e for e in events(hot, "job.ignored") if "sneaky" in e.get("file", "")],
             what="the folder to be refused")
    [refusal] = [e for e in events(hot, "job.ignored") if "sneaky" in e.get("file", "")]
    assert "'photo.png' in it is a symbolic link" in refusal["reason"]
    time.sleep(0.8)
    assert (hot.dir("inbox") / "sneaky" / "photo.png").is_symlink()  # untouched
    assert uploads(sim) == {}
    inbox_folder = hot.dir("inbox") / "sneaky"
    (inbox_folder / "photo.png").unlink()
    (inbox_folder / "photo.png").write_bytes(png_bytes(8, 8))
    assert hot.finished("sneaky") == "done"
    assert secret.exists()


def test_mask_goes_up_with_upload_mask_onto_its_image(hot, sim):
    workflow = json.loads((WORKFLOWS / "sdxl_img2img.json").read_text())
    workflow["10"] = {"class_type": "LoadImageMask", "inputs": {"image": "example.png",
                                                                "channel": "alpha"},
                      "_meta": {"title": "Load Mask"}}
    workflow["11"] = {"class_type": "SetLatentNoiseMask",
                      "inputs": {"samples": ["4", 0], "mask": ["10", 0]}}
    workflow["7"]["inputs"]["latent_image"] = ["11", 0]
    (hot.base / "workflows" / "inpaint.json").write_text(json.dumps(workflow))
    hot.config["workflows"]["inpaint"] = "workflows/inpaint.json"
    hot.config["folders"][0]["workflow"] = "inpaint"
    hot.start()
    staging = hot.base / "patch"
    staging.mkdir()
    photo = png_bytes(4, 2, (10, 20, 30))
    mask = Image.new("L", (4, 2), 0)
    mask.putpixel((1, 0), 255)  # white: the part to change
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    (staging / "photo.png").write_bytes(photo)
    (staging / "mask.png").write_bytes(buffer.getvalue())
    (staging / "job.json").write_text(json.dumps({"prompt": "a red door",
                                                  "images": {"image": "photo.png",
                                                             "mask": "mask.png"}}))
    staging.rename(hot.dir("inbox") / "patch")
    assert hot.finished("patch") == "done"
    inputs = {e["kind"]: e for e in hot.sidecar("patch")["inputs"]}
    assert inputs["mask"]["nodes"] == ["10"]
    on_server = uploads(sim)
    assert on_server[inputs["image"]["uploaded"]] == photo
    # /upload/mask kept the photo's colours with the mask as alpha (LoadImageMask: 1 - alpha)
    with Image.open(io.BytesIO(on_server[inputs["mask"]["uploaded"]])) as composite:
        assert composite.mode == "RGBA"
        assert composite.getpixel((0, 0)) == (10, 20, 30, 255)
        assert composite.getpixel((1, 0)) == (10, 20, 30, 0)
    graph = png_prompt(outputs(hot, "patch")[0])
    assert graph["10"]["inputs"]["image"] == inputs["mask"]["uploaded"]


@pytest.mark.parametrize("kind", ["per-file", "folder", "spec"])
def test_job_resumed_after_sigkill_uses_its_upload(tmp_path, make_sim, kind):
    sim = make_sim(job_seconds=1.5)
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=make_config(tmp_path, sim.url))
    image_folder(hot, "img2img", "sdxl_img2img.json",
                 image_mode="per-file" if kind == "per-file" else "off")
    photo = png_bytes(20, 20)
    try:
        hot.start()
        if kind == "per-file":
            hot.drop("big.png", photo)
            name = "big.png"
        elif kind == "folder":
            (hot.base / "big").mkdir()
            (hot.base / "big" / "big.png").write_bytes(photo)
            (hot.base / "big" / "prompt.txt").write_text("a storm")
            (hot.base / "big").rename(hot.dir("inbox") / "big")
            name = "big"
        else:
            hot.drop("big.png", photo)
            hot.drop("big.json", json.dumps({"prompt": "a storm", "images": "big.png"}))
            name = "big.json"
        wait_for(lambda: events(hot, "job.submitted"), what="the submission")
        hot.kill()
        assert sim.stats()["uploads"] == 1
        hot.start()
        assert hot.finished(name) == "done"
        assert sim.stats()["uploads"] == 1  # recorded in the job's state: not sent again
        assert len(events(hot, "job.image_uploaded")) == 1
        assert len(outputs(hot, "big")) == 1
        assert not hot.in_processing()
        if kind == "spec":
            assert (hot.dir("done") / "big.png").read_bytes() == photo
    finally:
        hot.stop()


def test_job_moved_to_another_server_uploads_there(tmp_path, make_sim):
    first, second = make_sim(job_seconds=30), make_sim(output_dir=tmp_path / "out2")
    hot = HotFolder(base=tmp_path, server_url=first.url, config=make_config(tmp_path, first.url))
    image_folder(hot, "upscale", "upscale_4x.json", image_mode="per-file")
    hot.config["servers"] = [{"url": first.url, "name": "one"}]
    hot.config["comfy"]["failover_seconds"] = 0.5
    hot.config["stop_grace_seconds"] = 0.2  # leave the job on "one" when stopping
    try:
        hot.start()
        hot.drop("pic.png", png_bytes(12, 12))
        wait_for(lambda: events(hot, "job.submitted"), what="the submission")
        hot.stop()  # leaves the job in processing/, uploaded to "one"
        first.stop()
        hot.config["servers"] = [{"url": first.url, "name": "one"},
                                 {"url": second.url, "name": "two"}]
        hot.start()
        assert hot.finished("pic.png", timeout=40) == "done"
        assert hot.sidecar("pic")["server"] == "two"
        assert second.stats()["uploads"] == 1
        assert uploads(second) == {hot.sidecar("pic")["inputs"][0]["uploaded"]:
                                   (hot.dir("done") / "pic.png").read_bytes()}
    finally:
        hot.stop()


def test_a_batch_in_a_job_folder_runs_every_run_on_its_image_uploaded_once(hot, sim):
    image_folder(hot, "img2img", "sdxl_img2img.json")
    hot.start()
    photo = png_bytes()
    staging = hot.base / "variants"
    staging.mkdir()
    (staging / "photo.png").write_bytes(photo)
    (staging / "job.json").write_text(json.dumps({"prompt": "oil painting", "seed": 3,
                                                  "matrix": {"denoise": [0.3, 0.6, 0.9]}}))
    staging.rename(hot.dir("inbox") / "variants")
    assert hot.finished("variants") == "done"
    assert sorted(p.name for p in (hot.dir("done") / "variants").iterdir()) == [
        "job.json", "photo.png"]
    [uploaded] = uploads(sim)  # one upload, shared by the three runs
    files = sorted((hot.dir("outbox") / "variants").glob("*.png"))
    graphs = [png_prompt(p) for p in files]
    assert [g["7"]["inputs"]["denoise"] for g in graphs] == [0.3, 0.6, 0.9]
    assert {g["1"]["inputs"]["image"] for g in graphs} == {uploaded}
    assert not hot.in_processing()


def test_a_batch_spec_naming_an_inbox_image_takes_it_once_and_keeps_it(hot, sim):
    image_folder(hot, "img2img", "sdxl_img2img.json")
    hot.start()
    hot.drop("cat.png", png_bytes(20, 20))
    hot.drop("cats.json", json.dumps({"prompts": ["a tiger", "a lion"],
                                      "images": {"image": "cat.png"}}))
    assert hot.finished("cats.json") == "done"
    assert (hot.dir("done") / "cat.png").exists()  # the image moved with its batch
    runs = json.loads((hot.dir("outbox") / "cats" / "manifest.json").read_text())["runs"]
    assert [(r["prompt"], r["status"]) for r in runs] == [("a tiger", "done"), ("a lion", "done")]
    assert len(uploads(sim)) == 1
