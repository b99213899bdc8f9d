"""Moving a job's files between its folders, across file systems if need be, never doubled.

On one file system a move is a link and an unlink (a rename for a folder). Across file
systems (done/ or failed/ on another disk or share) it is a copy under a hidden name, synced,
then linked or renamed into place, then the original removed. A crash between the copy being
in place and the original's removal would leave the file twice, so before the copy gets its
name a marker beside the original records that name (`.NAME.moving`); the next move of the
same file (the job resumed after a restart does it again) finds the copy in place, checks it
is the same file, and only removes the original.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from hotfolder import crashpoints
from hotfolder.fsutil import NOFOLLOW_READ, candidates, fit, place, temp_path, write_json


def move(src: Path, dest_dir: Path, name: str | None = None) -> Path:
    """Move `src` into `dest_dir` under a free name, across file systems if need be.

    A move cut short by a crash is finished, never doubled: on one file system a name already
    holding `src` itself (between link and unlink) is that move; across file systems the
    marker beside `src` names the copy already in place.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / (name or src.name)
    done = _resume(src, dest_dir)
    if done is not None:
        return done
    if src.is_dir() and not src.is_symlink():
        return _move_dir(src, target)
    try:
        for candidate in candidates(target.name):
            final = dest_dir / candidate
            try:
                os.link(src, final)
            except FileExistsError:
                if _same_file(src, final):
                    os.unlink(src)
                    return final
                continue
            os.unlink(src)
            return final
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return _copy_across(src, target)
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                         errno.EACCES):
            return _rename_free(src, target)
        raise
    raise AssertionError("unreachable")


def _move_dir(src: Path, target: Path) -> Path:
    """A job folder moves by one rename; across file systems it is copied under a hidden name,
    renamed into place, and the original is renamed aside before it is removed, so processing/
    never holds half a folder."""
    for candidate in candidates(target.name):
        final = target.with_name(candidate)
        if final.exists() or final.is_symlink():
            continue
        try:
            os.rename(src, final)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue
            if exc.errno != errno.EXDEV:
                raise
            return _copy_dir_across(src, target)
        return final
    raise AssertionError("unreachable")


def _copy_dir_across(src: Path, target: Path) -> Path:
    tmp = temp_path(target.parent, target.name)
    try:
        _copy_tree(src, tmp)
        for candidate in candidates(target.name):
            final = target.with_name(candidate)
            if final.exists() or final.is_symlink():
                continue
            _mark(src, candidate)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            break
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    crashpoints.reached("placed", src.name)
    _remove_source(src)
    return final


def _copy_tree(src: Path, dest: Path) -> None:
    """Files copied and synced, links copied as links (never followed), nothing else."""
    dest.mkdir()
    for entry in os.scandir(src):
        info = entry.stat(follow_symlinks=False)
        out = dest / entry.name
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(entry.path), out)
        elif stat.S_ISDIR(info.st_mode):
            _copy_tree(Path(entry.path), out)
        elif stat.S_ISREG(info.st_mode):
            _copy_file(Path(entry.path), out)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _rename_free(src: Path, target: Path) -> Path:
    for candidate in candidates(target.name):
        final = target.with_name(candidate)
        if not final.exists():
            os.rename(src, final)
            return final
    raise AssertionError("unreachable")


def _copy_file(src: Path, out: Path) -> None:
    """Copy a plain file's content and times, reading it through a descriptor opened without
    following a link (a link swapped in is never copied through)."""
    fd = os.open(src, NOFOLLOW_READ)
    with os.fdopen(fd, "rb") as reader, open(out, "xb") as writer:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{src.name} is not a plain file: not copied")
        shutil.copyfileobj(reader, writer, 1024 * 1024)
        writer.flush()
        os.fsync(writer.fileno())
        st = os.fstat(fd)
        os.fchmod(writer.fileno(), stat.S_IMODE(st.st_mode))
        os.utime(writer.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_across(src: Path, target: Path) -> Path:
    if src.is_symlink():  # a link moves as a link, never as its target's content
        for candidate in candidates(target.name):
            final = target.with_name(candidate)
            with contextlib.suppress(FileExistsError):
                os.symlink(os.readlink(src), final)
                os.unlink(src)
                return final
    tmp = temp_path(target.parent, target.name)
    try:
        _copy_file(src, tmp)
        final = place(tmp, target, before=lambda name: _mark(src, name))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    crashpoints.reached("placed", src.name)
    _remove_source(src)
    return final


# -- the marker of a move across file systems ------------------------------------------------


def _marker(src: Path) -> Path:
    return src.with_name(fit(f".{src.name}", ".moving", 250))


def _mark(src: Path, name: str) -> None:
    """Record, durably, the name the copy of `src` is about to get."""
    write_json(_marker(src), {"name": name, **_shape(src)}, replace=True, compact=True)


def _shape(path: Path) -> dict[str, Any]:
    """What a copy keeps of the original: a file's size and mtime (copied with it), a
    folder's files and their sizes."""
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        return {"files": sorted(
            [str((Path(root) / f).relative_to(path)), (Path(root) / f).lstat().st_size]
            for root, _, files in os.walk(path) for f in files)}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def pending(src: Path, dest_dir: Path) -> str | None:
    """The name in `dest_dir` of a copy of `src` that a move cut short already put in place."""
    marker = _marker(src)
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        name = str(recorded.pop("name"))
        if "/" not in name and _alike(_shape(dest_dir / name), recorded) \
                and _alike(_shape(src), recorded):
            return name
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _resume(src: Path, dest_dir: Path) -> Path | None:
    """A move across file systems cut short after its copy got its name: finish it."""
    name = pending(src, dest_dir)
    if name is None:
        _marker(src).unlink(missing_ok=True)
        return None
    _remove_source(src)
    return dest_dir / name


def _alike(shape: dict[str, Any], recorded: dict[str, Any]) -> bool:
    """The same file or folder; a share may keep mtimes coarser than the disk it came from."""
    if "files" in shape:
        return shape["files"] == recorded.get("files")
    return shape["size"] == recorded.get("size") \
        and abs(shape["mtime_ns"] - int(recorded.get("mtime_ns", 0))) <= 2_000_000_000


def _remove_source(src: Path) -> None:
    """The original, once its copy is in place; a folder is renamed aside first, so the
    folder it leaves is never half there. The marker goes last."""
    if src.is_dir() and not src.is_symlink():
        trash = temp_path(src.parent, src.name)
        os.rename(src, trash)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.unlink(src)
    _marker(src).unlink(missing_ok=True)
