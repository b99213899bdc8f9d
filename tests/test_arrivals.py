"""How files arrive: slow copies, sync-client temp names, odd names, other file systems."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest
from harness import wait_for

from hotfolder.config.load import parse_config
from hotfolder.errors import ConfigError
from hotfolder.job.prune import prune
from hotfolder.mounts import fs_type, needs_polling

IGNORED = ["fox.txt.part", "fox.tmp", "fox.partial", "fox.crdownload", "fox.download",
           "~$fox.txt", ".~lock.fox.txt#", ".syncthing.fox.txt.tmp", ".dropbox", "._fox.txt",
           ".DS_Store", "Thumbs.db", "desktop.ini", "draft-fox.txt", "notes.md"]


def _slow_write(path: Path, chunks: list[bytes], pauses: list[float]) -> None:
    with open(path, "wb") as fh:
        for chunk, pause in zip(chunks, pauses, strict=True):
            fh.write(chunk)
            fh.flush()
            time.sleep(pause)


def test_slow_write_is_taken_once_and_whole(hot):
    hot.config["folders"][0]["settle_seconds"] = 1.0
    hot.start()
    words = [f"word{i} ".encode() for i in range(8)]
    inbox = hot.dir("inbox")
    # written straight into the inbox over ~3 s, stalling for 0.8 s in the middle (each
    # pause shorter than settle_seconds, as a slow NAS copy would be)
    pauses = [0.3, 0.3, 0.3, 0.8, 0.3, 0.3, 0.3, 0.0]
    writer = threading.Thread(target=_slow_write, args=(inbox / "slow.txt", words, pauses))
    writer.start()
    writer.join()
    assert hot.finished("slow.txt") == "done"
    assert hot.sidecar("slow")["prompt"] == b"".join(words).decode().strip()
    assert len(list(hot.dir("done").iterdir())) == 1


def test_file_replaced_while_settling_uses_the_new_content(hot):
    hot.config["folders"][0].update(settle_seconds=1.0, ready="settle")  # the clock decides
    hot.start()
    inbox = hot.dir("inbox")
    (inbox / "swap.txt").write_text("first version")
    time.sleep(0.4)
    (inbox / ".swap.new").write_text("second version")
    os.replace(inbox / ".swap.new", inbox / "swap.txt")
    assert hot.finished("swap.txt") == "done"
    assert hot.sidecar("swap")["prompt"] == "second version"


def test_a_closed_file_is_taken_at_once_and_its_replacement_is_a_job_too(hot):
    hot.config["folders"][0]["settle_seconds"] = 30.0  # never waited for: the writer closed it
    hot.start()
    inbox = hot.dir("inbox")
    (inbox / "swap.txt").write_text("first version")
    wait_for(lambda: not (inbox / "swap.txt").exists(), what="the claim of the closed file")
    (inbox / ".swap.new").write_text("second version")
    os.replace(inbox / ".swap.new", inbox / "swap.txt")
    assert hot.finished("swap-2.txt", timeout=20) == "done"
    prompts = {hot.sidecar(stem)["prompt"] for stem in ("swap", "swap-2")}
    assert prompts == {"first version", "second version"}


def test_ignored_names_stay_untouched_and_conflicted_copies_are_jobs(hot):
    hot.config["folders"][0]["ignore"] = ["draft-*"]
    hot.config["folders"][0]["rescan_seconds"] = 0.5
    hot.start()
    inbox = hot.dir("inbox")
    for name in IGNORED:
        (inbox / name).write_text("not a job")
    (inbox / "a folder.txt").mkdir()
    conflicted = "fox (conflicted copy 2026-11-27).txt"
    hot.drop(conflicted, "a conflicted copy is still a job")
    assert hot.finished(conflicted) == "done"
    time.sleep(1.2)  # two rescans later nothing else has moved
    for name in IGNORED:
        assert (inbox / name).read_text() == "not a job", name
    assert (inbox / "a folder.txt").is_dir()
    assert sorted(p.name for p in hot.dir("failed").iterdir()) == []


def test_polling_observer_sees_files(hot):
    hot.config["folders"][0]["watch"] = "poll"
    hot.config["folders"][0]["rescan_seconds"] = 3600  # only the observer can find the file
    hot.start()
    hot.drop("polled.txt", "seen by the polling observer")
    assert hot.finished("polled.txt") == "done"
    watching = [e for e in hot.events() if e.get("event") == "folder.watching"]
    assert watching and watching[0]["observer"] == "poll"


def test_unicode_long_read_only_and_renamed_names(hot):
    hot.start()
    unicode_name = "Füchse im Schnee 🦊 (1).txt"
    long_name = "x" * 200 + ".txt"
    hot.drop(unicode_name, "unicode and spaces")
    hot.drop(long_name, "a very long name")
    readonly = hot.drop("readonly.txt", "read-only file")
    readonly.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    inbox = hot.dir("inbox")
    (inbox / "draft.txt").write_text("renamed in place by a sync client")
    os.rename(inbox / "draft.txt", inbox / "final.txt")
    for name in (unicode_name, long_name, "readonly.txt", "final.txt"):
        assert hot.finished(name) == "done", name
    assert (hot.dir("outbox") / "Füchse im Schnee 🦊 (1)_00001.png").exists()
    assert any(p.name.startswith("xxxx") and p.suffix == ".png"
               for p in hot.dir("outbox").iterdir())
    assert not (hot.dir("done") / "draft.txt").exists()
    assert not list(hot.dir("failed").iterdir())


def test_two_jobs_with_the_same_name_one_after_another(hot):
    hot.start()
    hot.drop("twice.txt", "first")
    wait_for(lambda: not (hot.dir("inbox") / "twice.txt").exists(), what="the first claim")
    hot.drop("twice.txt", "second")
    assert hot.finished("twice.txt") == "done"
    assert hot.finished("twice-2.txt") == "done"
    prompts = sorted(json.loads(p.read_text())["prompt"] for p in hot.dir("outbox").glob("*.json"))
    assert prompts == ["first", "second"]


def test_outbox_done_failed_on_another_file_system_and_permissions(hot):
    other = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        assert os.stat(other).st_dev != os.stat(hot.base).st_dev, "need two file systems"
        folder = hot.config["folders"][0]
        folder.update(outbox=str(other / "outbox"), done=str(other / "done"),
                      failed=str(other / "failed"), file_mode="0664")
        hot.start()
        hot.drop("exdev.txt", "moved across file systems")
        hot.drop("exdev-bad.json", "{", stale=True)
        wait_for(lambda: (other / "done" / "exdev.txt").exists(), what="done on the other fs")
        wait_for(lambda: (other / "failed" / "exdev-bad.json").exists(), what="failed there")
        for path in [other / "done" / "exdev.txt", other / "outbox" / "exdev_00001.png",
                     other / "outbox" / "exdev.json", other / "failed" / "exdev-bad.json",
                     other / "failed" / "exdev-bad.error.json"]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o664, path
        assert not hot.in_processing()
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_mount_table_decides_polling(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /mnt/nas rw,relatime shared:2 - nfs4 nas:/export rw\n"
        "41 22 0:51 / /mnt/My\\040Drop rw,relatime shared:3 - fuse.rclone drop: rw\n")
    assert fs_type(Path("/srv/hot/inbox"), str(mountinfo)) == "ext4"
    assert fs_type(Path("/mnt/nas/hot/inbox"), str(mountinfo)) == "nfs4"
    assert fs_type(Path("/mnt/My Drop/inbox"), str(mountinfo)) == "fuse.rclone"
    assert not needs_polling("ext4") and needs_polling("nfs4") and needs_polling("fuse.rclone")
    assert needs_polling("cifs") and needs_polling("9p") and not needs_polling(None)


def test_prune_removes_only_old_finished_files(tmp_path):
    config = parse_config({"workflows": {}, "folders": [{"root": "hot", "workflow": str(
        Path(__file__).resolve().parents[1] / "config/workflows/sdxl_txt2img.json"),
        "prune_days": 7}]}, base=tmp_path)
    folder = config.folders[0]
    for d in (folder.done, folder.failed, folder.outbox):
        d.mkdir(parents=True)
    old, new = folder.done / "old.txt", folder.failed / "new.txt"
    kept_output = folder.outbox / "old_00001.png"
    for path in (old, new, kept_output):
        path.write_text("x")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    os.utime(kept_output, (ten_days_ago, ten_days_ago))
    assert prune(folder) == 1
    assert not old.exists() and new.exists() and kept_output.exists()


@pytest.mark.parametrize("mode", ["664", "0664", "0o664", 664, "999"])
def test_file_mode_must_be_quoted_octal(tmp_path, mode):
    data = {"folders": [{"root": "hot", "file_mode": mode, "workflow": str(
        Path(__file__).resolve().parents[1] / "config/workflows/sdxl_txt2img.json")}]}
    if mode in ("664", "0664", "0o664"):
        assert parse_config(data, base=tmp_path).folders[0].file_mode == 0o664
    else:
        with pytest.raises(ConfigError, match=r"folders\[0\].file_mode"):
            parse_config(data, base=tmp_path)
