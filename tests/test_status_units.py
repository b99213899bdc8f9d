"""What status decides without a daemon: which inbox entries are jobs (and why the others are
not), batches read from their manifests, whether the daemon still runs, the text it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import ROOT

from hotfolder.commands.status import format_text
from hotfolder.config.load import parse_config
from hotfolder.config.model import FolderConfig
from hotfolder.daemon.recent import recent_done
from hotfolder.daemon.status import collect, status_path
from hotfolder.job.inboxfiles import not_a_job, survey
from hotfolder.job.state import HOST


def folder_config(tmp_path: Path, **kwargs: Any) -> FolderConfig:
    folder = FolderConfig(name="f", root=tmp_path / "hot", template="t", **kwargs)
    for path in folder.all_dirs():
        path.mkdir(parents=True, exist_ok=True)
    return folder


def _verdict(folder: FolderConfig, name: str) -> Any:
    return not_a_job(folder, name, (folder.inbox / name).lstat())


def test_what_is_a_job_and_why_the_rest_is_not(tmp_path):
    folder = folder_config(tmp_path, ignore=("draft-*",))
    inbox = folder.inbox
    for name in ("fox.txt", "notes.md", "photo.png", "draft-1.txt", ".fox.txt.part", "x.tmp",
                 "fox.txt.cancel", "README"):
        (inbox / name).write_text("x")
    (inbox / "job").mkdir()
    (inbox / "link.txt").symlink_to(inbox / "fox.txt")
    (tmp_path / "outside.txt").write_text("x")
    os.link(tmp_path / "outside.txt", inbox / "hard.txt")

    assert _verdict(folder, "fox.txt") is None
    assert _verdict(folder, "job") is None  # a job folder
    assert _verdict(folder, "notes.md").reason.startswith(
        "extension .md is not one this folder takes (.txt, .json, .yaml")
    assert _verdict(folder, "photo.png").reason.startswith("a picture: ")
    assert _verdict(folder, "draft-1.txt").reason == \
        "matches the folder's ignore pattern 'draft-*'"
    assert _verdict(folder, "link.txt").refused and _verdict(folder, "hard.txt").refused
    assert "(none)" in _verdict(folder, "README").reason
    for quiet in (".fox.txt.part", "x.tmp", "fox.txt.cancel"):  # a writer's, or taken at once
        assert not _verdict(folder, quiet).listed, quiet
    assert _verdict(folder, "fox.txt.cancel").cancel

    per_file = folder_config(tmp_path / "pf", image_mode="per-file",
                             extensions=(".txt", ".png"))
    (per_file.inbox / "photo.png").write_text("x")
    assert _verdict(per_file, "photo.png") is None

    found = survey(folder)
    assert found.waiting == 2  # fox.txt and the job folder: no link counted
    assert [i["file"] for i in found.ignored] == [
        "README", "draft-1.txt", "hard.txt", "link.txt", "notes.md", "photo.png"]
    assert found.ignored_total == 6


def test_the_ignored_listing_is_bounded_and_escapes_names(tmp_path):
    folder = folder_config(tmp_path)
    for n in range(30):
        (folder.inbox / f"n{n:02d}.md").write_text("x")
    (folder.inbox / "bell\a.md").write_text("x")
    found = survey(folder, limit=5)
    assert found.ignored_total == 31
    assert [i["file"] for i in found.ignored] == ["bell\\x07.md", "n00.md", "n01.md", "n02.md",
                                                  "n03.md"]


def _config(tmp_path: Path) -> Any:
    (tmp_path / "t.json").write_text((ROOT / "config/workflows/sdxl_txt2img.json").read_text())
    config = parse_config({"workflows": {"sdxl": "t.json"}, "servers": ["http://127.0.0.1:9"],
                           "folders": [{"name": "main", "root": "hot", "workflow": "sdxl"}]},
                          base=tmp_path, path=tmp_path / "hotfolder.yaml")
    for path in config.folders[0].all_dirs():
        path.mkdir(parents=True)
    return config


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stopped_or_killed_daemon_is_not_running_though_its_status_is_fresh(tmp_path):
    config = _config(tmp_path)
    path = status_path(config.folders[0])

    def daemon(**live: Any) -> dict[str, Any]:
        doc = {"pid": os.getpid(), "host": "h", "node": HOST, "updated_at": time.time(),
               "jobs": [], "servers": [], **live}
        path.write_text(json.dumps(doc))
        return collect(config, probe=False)["daemon"]

    assert daemon()["running"] is True
    assert daemon(pid=_dead_pid())["running"] is False  # killed on this machine
    assert daemon(pid=_dead_pid(), node="elsewhere")["running"] is True  # can't tell there
    stopped = daemon(stopped_at=time.time())
    assert stopped["running"] is False and stopped["stopped_at"]
    assert daemon(updated_at=time.time() - 60)["running"] is False


def test_a_batch_is_read_only_from_its_own_manifest(tmp_path):
    folder = folder_config(tmp_path)
    grid = folder.outbox / "grid"
    grid.mkdir()
    manifest = {"job": "grid.json", "status": "done", "runs_total": 1, "runs_done": 1,
                "runs_failed": 0, "runs": [{"outputs": ["grid-0001_00001.png"]}]}
    (grid / "manifest.json").write_text(json.dumps(manifest))
    other = folder.outbox / "other"
    other.mkdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps({**manifest, "job": "not ours"}))
    (other / "manifest.json").symlink_to(tmp_path / "elsewhere.json")  # never followed
    (folder.outbox / "mine").mkdir()  # a user's folder without a manifest
    assert [(d["job"], d["batch"]) for d in recent_done(folder, 10)] == [
        ("grid.json", {"dir": "grid", "status": "done", "runs_total": 1, "runs_done": 1,
                       "runs_failed": 0, "outputs": 1})]


def test_status_text_says_nothing_of_an_unknown_queue_and_how_to_start(tmp_path):
    config = _config(tmp_path)
    doc = {"daemon": {"running": False}, "folders": [],
           "servers": [{"name": "gpu", "url": "http://gpu:8188", "up": True,
                        "queue_remaining": None}]}
    lines = format_text(doc, config).splitlines()
    assert lines[0] == "daemon: not running (no fresh status from it)"
    assert lines[1].startswith("  start it with:  ") and \
        lines[1].endswith(f" run --config {tmp_path / 'hotfolder.yaml'}")
    assert lines[2] == "server gpu http://gpu:8188: up"


def test_a_reader_that_goes_away_ends_status_without_a_traceback(tmp_path):
    _config(tmp_path)  # its template and folders
    (tmp_path / "hotfolder.yaml").write_text(
        "workflows: {sdxl: t.json}\nservers: [http://127.0.0.1:9]\n"
        "folders: [{name: main, root: hot, workflow: sdxl}]\n")
    read, write = os.pipe()
    os.close(read)  # like `| head` that has already exited
    try:
        proc = subprocess.run([sys.executable, "-m", "hotfolder", "status", "--config",
                               str(tmp_path / "hotfolder.yaml")], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=30, check=False)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""


def test_status_text_shows_a_servers_models_and_a_job_loading_them():
    from hotfolder.commands.status import format_text

    doc = {"daemon": {"running": True, "pid": 1, "host": "h", "age_seconds": 0.5},
           "folders": [{"name": "sdxl", "root": "/hot", "counts": {"waiting": 0, "running": 1,
                                                                   "done": 0, "failed": 0},
                        "jobs": [{"job": "fox.txt", "phase": "submitted", "server": "gpu",
                                  "prompt_id": "p", "age_seconds": 3, "model_switch": True}]}],
           "servers": [{"name": "gpu", "url": "http://gpu:8188", "up": True,
                        "queue_remaining": 1, "models": ["sd_xl_base_1.0.safetensors"],
                        "model_switches": 4}]}
    text = format_text(doc)
    assert "fox.txt: submitted on gpu (loading models), prompt p" in text
    assert "server gpu http://gpu:8188: up, 1 queued, models sd_xl_base_1.0.safetensors, " \
           "4 model switches" in text
