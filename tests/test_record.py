"""A job's state record (job/state.py): written whole once, then a line appended a save, the
last complete line being the record; what a crash or a reader in the middle of a save sees."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hotfolder.config.model import FolderConfig
from hotfolder.job import state as state_module
from hotfolder.job.state import JobState, read_record


def folder_config(tmp_path: Path) -> FolderConfig:
    folder = FolderConfig(name="f", root=tmp_path / "hot", template="t")
    folder.processing.mkdir(parents=True)
    return folder


def test_saves_after_the_first_append_to_the_same_file(tmp_path):
    folder = folder_config(tmp_path)
    job = JobState(name="a.txt", folder="f")
    path = JobState.path_for(folder, "a.txt")
    job.save(folder)
    inode = os.stat(path).st_ino
    for phase in ("submitting", "submitted", "delivering"):
        job.phase = phase
        job.save(folder, durable=False)
    assert os.stat(path).st_ino == inode  # no new file for each save
    assert len(path.read_text().splitlines()) == 4
    loaded = JobState.load(folder, "a.txt")
    assert loaded is not None and loaded.phase == "delivering"
    assert sorted(p.name for p in folder.processing.iterdir()) == [".a.txt.state.json"]


def test_the_record_is_written_whole_again_every_record_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "RECORD_LINES", 3)
    folder = folder_config(tmp_path)
    job = JobState(name="a.txt", folder="f")
    path = JobState.path_for(folder, "a.txt")
    for n in range(10):
        job.seed = n
        job.save(folder)
        assert len(path.read_text().splitlines()) <= 4
    assert read_record(path)["seed"] == 9


def test_a_line_cut_short_is_passed_over_and_a_new_owner_starts_the_file_afresh(tmp_path):
    folder = folder_config(tmp_path)
    job = JobState(name="a.txt", folder="f", phase="submitted", prompt_id="p1")
    job.save(folder)
    path = JobState.path_for(folder, "a.txt")
    whole = json.dumps({**job.record(), "phase": "delivering"})
    with open(path, "a") as fh:
        fh.write(whole[: len(whole) // 2])  # a crash in the middle of a save
    loaded = JobState.load(folder, "a.txt")
    assert loaded is not None and loaded.phase == "submitted" and loaded.prompt_id == "p1"
    # the next process's first save writes the record whole: its appends are never glued
    # onto the broken line
    loaded.phase = "delivering"
    loaded.save(folder)
    loaded.phase = "done"
    loaded.save(folder)
    assert path.read_text().count("\n") == 2
    assert JobState.load(folder, "a.txt").phase == "done"


def test_a_record_removed_or_replaced_by_a_link_meanwhile_is_written_whole(tmp_path):
    folder = folder_config(tmp_path)
    job = JobState(name="a.txt", folder="f")
    path = JobState.path_for(folder, "a.txt")
    job.save(folder)
    path.unlink()
    job.save(folder)
    assert read_record(path) is not None
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}\n")
    path.unlink()
    path.symlink_to(elsewhere)
    job.save(folder)
    assert not path.is_symlink() and elsewhere.read_text() == "{}\n"


def test_read_record_reads_only_the_end_of_a_huge_file_and_skips_what_is_not_a_record(tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr(state_module, "MAX_RECORD_BYTES", 1000)
    path = tmp_path / ".x.state.json"
    path.write_bytes(b"x" * 5000 + b"\n" + b'{"phase": "submitted"}\n' + b"[1, 2]\n\xff\xfe\n")
    assert read_record(path) == {"phase": "submitted"}
    path.write_bytes(b"not json at all\n")
    assert read_record(path) is None
    assert read_record(tmp_path / "missing") is None
