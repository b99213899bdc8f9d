"""Atomic writes, no-clobber names, and moves across file systems."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from hotfolder import fsutil, moves


def test_candidates_put_the_suffix_before_the_extension():
    names = fsutil.candidates("fox.error.json")
    assert [next(names) for _ in range(3)] == ["fox.error.json", "fox-2.error.json",
                                               "fox-3.error.json"]
    assert list(zip(range(2), fsutil.candidates("README"), strict=False))[1][1] == "README-2"


def test_atomic_writer_never_overwrites(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old")
    with fsutil.atomic_writer(tmp_path / "a.png") as (fh, placed):
        fh.write(b"new")
    assert placed == [tmp_path / "a-2.png"]
    assert (tmp_path / "a.png").read_bytes() == b"old"
    assert (tmp_path / "a-2.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-2.png", "a.png"]


def test_atomic_writer_leaves_nothing_when_the_writer_fails(tmp_path):
    with pytest.raises(RuntimeError), fsutil.atomic_writer(tmp_path / "x.bin") as (fh, _):
        fh.write(b"half")
        raise RuntimeError("download broke off")
    assert list(tmp_path.iterdir()) == []


def test_move_adds_a_suffix_on_clash(tmp_path):
    src_dir, dest = tmp_path / "processing", tmp_path / "done"
    src_dir.mkdir()
    dest.mkdir()
    (dest / "fox.txt").write_text("first")
    (src_dir / "fox.txt").write_text("second")
    final = moves.move(src_dir / "fox.txt", dest)
    assert final.name == "fox-2.txt" and final.read_text() == "second"
    assert (dest / "fox.txt").read_text() == "first"
    assert not (src_dir / "fox.txt").exists()


def test_move_across_file_systems_copies_then_unlinks(tmp_path, monkeypatch):
    src = tmp_path / "job.txt"
    src.write_text("payload")
    (tmp_path / "done").mkdir()
    real_link = os.link

    def cross_device(a, b, *args, **kwargs):
        if str(a) == str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(a, b, *args, **kwargs)

    monkeypatch.setattr(fsutil.os, "link", cross_device)
    final = moves.move(src, tmp_path / "done")
    assert final == tmp_path / "done" / "job.txt" and final.read_text() == "payload"
    assert not src.exists()
    assert [p.name for p in (tmp_path / "done").iterdir()] == ["job.txt"]


def test_write_json_replace_overwrites_in_place(tmp_path):
    target = tmp_path / ".job.state.json"
    fsutil.write_json(target, {"a": 1}, replace=True)
    fsutil.write_json(target, {"a": 2}, replace=True)
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == [".job.state.json"]


def test_free_stem_skips_taken_names(tmp_path):
    (tmp_path / "fox.json").write_text("{}")
    (tmp_path / "fox-2_00001.png").write_bytes(b"")
    assert fsutil.free_stem(tmp_path, "fox", [".json", "_00001.png"]) == "fox-3"


def test_move_cut_short_between_link_and_unlink_is_finished_not_doubled(tmp_path):
    src_dir, dest = tmp_path / "processing", tmp_path / "done"
    src_dir.mkdir()
    dest.mkdir()
    (src_dir / "job.txt").write_text("x")
    os.link(src_dir / "job.txt", dest / "job.txt")  # the crash came right after the link
    final = moves.move(src_dir / "job.txt", dest)
    assert final == dest / "job.txt"
    assert sorted(p.name for p in dest.iterdir()) == ["job.txt"]
    assert not (src_dir / "job.txt").exists()


def test_own_temp_files_are_live_once_the_process_writes() -> None:
    """At start, a temp name with our pid is an earlier process's (pids repeat); on a reload
    it is this process's own file, half-written right now, and must stay."""
    name = fsutil.temp_name("job.txt.state.json")
    assert fsutil.dead_temp(name)
    assert not fsutil.dead_temp(name, ours_alive=True)


def test_move_across_file_systems_cut_short_after_the_copy_is_finished_not_doubled(tmp_path):
    """The copy got its name (recorded beside the original first), then the process died
    before removing the original: the next move of it only removes the original."""
    src, dest = tmp_path / "processing" / "job.txt", tmp_path / "done"
    src.parent.mkdir()
    dest.mkdir()
    src.write_text("payload")
    moves._mark(src, "job.txt")
    shutil.copy2(src, dest / "job.txt")
    assert moves.pending(src, dest) == "job.txt"
    assert moves.move(src, dest) == dest / "job.txt"
    assert sorted(p.name for p in dest.iterdir()) == ["job.txt"]
    assert sorted(p.name for p in src.parent.iterdir()) == []  # original and marker gone


def test_a_marker_naming_someone_elses_file_is_ignored(tmp_path):
    src, dest = tmp_path / "processing" / "job.txt", tmp_path / "done"
    src.parent.mkdir()
    dest.mkdir()
    src.write_text("payload")
    moves._mark(src, "job.txt")
    (dest / "job.txt").write_text("another job's file, same name")
    assert moves.pending(src, dest) is None
    assert moves.move(src, dest) == dest / "job-2.txt"
    assert (dest / "job.txt").read_text() == "another job's file, same name"
