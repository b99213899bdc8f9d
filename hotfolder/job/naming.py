"""The names a job gives what it leaves behind: its outputs' base name (chosen once, held
while it delivers, so two jobs never share one), its ComfyUI filename_prefix, and its error
file in failed/. Names are NFC, so `café` typed on a Mac and on Windows is one name, and fit
in 255 bytes."""

from __future__ import annotations

import re
import threading
import unicodedata
from pathlib import Path, PurePosixPath

from hotfolder.fsutil import fit, free_stem, split_name
from hotfolder.job.state import JobState
from hotfolder.outdir import OutDir


def job_stem(name: str) -> str:
    """The job file's name without its extension, as the outputs' base name, in NFC: `café`
    typed on a Mac (NFD) and on Windows (NFC) must not give two names that look the same."""
    stem = unicodedata.normalize("NFC", PurePosixPath(name).stem)
    return stem or "job"


def safe_prefix_part(stem: str) -> str:
    """A piece of a ComfyUI filename_prefix: no separators, no dots, bounded length."""
    cleaned = re.sub(r"[^\w\-]+", "_", stem, flags=re.UNICODE).strip("_.")
    return (cleaned or "job")[:60]


_reserved: set[Path] = set()  # outbox stems taken by jobs still delivering
_reserve_lock = threading.Lock()


def reserve_stem(outdir: OutDir, state: JobState, suffixes: list[str]) -> str:
    """Pick (once) and hold the job's outbox base name, so two jobs never share one."""
    outbox = outdir.path
    with _reserve_lock:
        if state.out_stem is None:
            taken = {p.name for p in _reserved if p.parent == outbox}
            state.out_stem = free_stem(outbox, _short(job_stem(state.name)),
                                       [".json", *suffixes], taken=taken, exists=outdir.exists)
        _reserved.add(outbox / state.out_stem)
        return state.out_stem


def release_stem(outbox: Path, state: JobState) -> None:
    with _reserve_lock:
        if state.out_stem is not None:
            _reserved.discard(outbox / state.out_stem)


def _short(stem: str, limit: int = 180) -> str:
    """Room for `_00001.ext` and temp-name decorations within NAME_MAX (255 bytes)."""
    while len(stem.encode()) > limit:
        stem = stem[:-1]
    return stem


def error_name_for(name: str) -> str:
    """The error file of the job file `name` in failed/: its name without its extension, in
    NFC, plus `.error.json` (`fox.txt` -> `fox.error.json`); a job itself named like an error
    file gets `x.error.error.json`, never its own name. Within 255 bytes."""
    stem, ext = split_name(name)
    stem = name[: -len(".json")] if ext == ".error.json" else stem
    return fit(unicodedata.normalize("NFC", stem), ".error.json")
