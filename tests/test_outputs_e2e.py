"""Each folder's output policy, end to end: one daemon, four folders (as written, stripped,
JPEG, WebP), a single job in each and a batch in one."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

from harness import HotFolder, make_config, png_prompt, wait_for
from PIL import Image

POLICIES = {"strip": {"metadata": "strip"},
            "jpeg": {"output_format": "jpeg", "output_quality": 80},
            "webp": {"output_format": "webp"}}


def drop(root: Path, name: str, content: str) -> None:
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f".{name}.part").write_text(content)
    (inbox / f".{name}.part").rename(inbox / name)


def finished(hot: HotFolder, root: Path, name: str) -> str:
    def where() -> str | None:
        for state in ("done", "failed"):
            if (root / state / name).exists():
                return state
        return None
    return wait_for(where, 30, what=f"{root.name}/{name} to finish")


def sidecar(root: Path, stem: str) -> dict:
    return json.loads((root / "outbox" / f"{stem}.json").read_text())


def test_strip_jpeg_and_webp_folders_beside_one_left_as_written(tmp_path, sim):
    config = make_config(tmp_path, sim.url)
    for name, policy in POLICIES.items():
        config["folders"].append({"name": name, "root": f"hot-{name}", "workflow": "sdxl",
                                  "settle_seconds": 0.2, **policy})
    hot = HotFolder(base=tmp_path, server_url=sim.url, config=config)
    roots = {"main": hot.root, **{name: tmp_path / f"hot-{name}" for name in POLICIES}}
    hot.start()
    try:
        for root in roots.values():
            drop(root, "fox.json", json.dumps({"prompt": "a red fox in the snow", "seed": 5}))
        drop(roots["jpeg"], "pair.json", json.dumps({"prompt": "an owl", "count": 2}))
        for name, root in roots.items():
            assert finished(hot, root, "fox.json") == "done", (name, hot.log()[-3000:])
        assert finished(hot, roots["jpeg"], "pair.json") == "done"
    finally:
        hot.stop()

    # as written: ComfyUI's PNG, prompt included
    original = roots["main"] / "outbox" / "fox_00001.png"
    assert png_prompt(original)["6"]["inputs"]["text"] == "a red fox in the snow"
    with Image.open(original) as image:
        size = image.size
        assert "prompt" in image.text
    entry = sidecar(roots["main"], "fox")["outputs"][0]
    assert entry["file"] == "fox_00001.png" and "format" not in entry

    # stripped: the same pixels, no text chunk at all
    stripped = roots["strip"] / "outbox" / "fox_00001.png"
    data = stripped.read_bytes()
    assert not any(kind in data for kind in (b"tEXt", b"iTXt", b"zTXt"))
    assert b"prompt" not in data and b"workflow" not in data
    with Image.open(stripped) as image, Image.open(original) as before:
        assert image.format == "PNG" and image.text == {} and "prompt" not in image.info
        assert image.tobytes() == before.tobytes()
    side = sidecar(roots["strip"], "fox")
    assert side["outputs"][0]["metadata"] == "stripped"
    assert side["prompt"] == "a red fox in the snow"  # provenance stays in the sidecar

    # re-encoded, named after the format, named so by the sidecar
    for name, fmt, suffix in (("jpeg", "JPEG", ".jpg"), ("webp", "WEBP", ".webp")):
        outbox = roots[name] / "outbox"
        entry = sidecar(roots[name], "fox")["outputs"][0]
        assert (entry["file"], entry["format"]) == (f"fox_00001{suffix}", name)
        assert entry["bytes"] == (outbox / entry["file"]).stat().st_size
        with Image.open(outbox / entry["file"]) as image:
            assert (image.format, image.size) == (fmt, size)
        assert b"a red fox" not in (outbox / entry["file"]).read_bytes()
        assert sorted(p.name for p in outbox.iterdir() if p.is_file()) == \
            ["fox.json", f"fox_00001{suffix}"]  # no temp file left behind

    # a batch follows its folder's policy
    batch = roots["jpeg"] / "outbox" / "pair"
    manifest = json.loads((batch / "manifest.json").read_text())
    assert [r["outputs"] for r in manifest["runs"]] == \
        [["pair-0001_00001.jpg"], ["pair-0002_00001.jpg"]]
    for run in manifest["runs"]:
        with Image.open(io.BytesIO((batch / run["outputs"][0]).read_bytes())) as image:
            assert (image.format, image.size) == ("JPEG", size)


def test_a_kill_while_converting_or_before_the_record_leaves_one_whole_file(hot, monkeypatch):
    hot.config["folders"][0]["output_format"] = "jpeg"
    for point in ("converted", "delivered"):
        monkeypatch.setenv("HOTFOLDER_TEST_KILL", f"{point}:{point}_00001.jpg")
        hot.start()
        hot.drop(f"{point}.json", json.dumps({"prompt": "a fox", "seed": 1}))
        hot.proc.wait(timeout=30)
        assert hot.proc.returncode == -signal.SIGKILL
        monkeypatch.delenv("HOTFOLDER_TEST_KILL")
        hot.start()
        assert hot.finished(f"{point}.json") == "done"
        hot.stop()
        entry = hot.sidecar(point)["outputs"][0]
        assert (entry["file"], entry["format"]) == (f"{point}_00001.jpg", "jpeg")
        with Image.open(hot.dir("outbox") / entry["file"]) as image:
            image.load()  # whole, not cut short
            assert image.format == "JPEG"
    assert sorted(p.name for p in hot.dir("outbox").iterdir()) == [  # no temp, no second copy
        "converted.json", "converted_00001.jpg", "delivered.json", "delivered_00001.jpg"]
