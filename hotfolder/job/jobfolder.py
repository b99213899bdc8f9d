"""Job folders: a directory dropped into the inbox holding `job.json` (or `job.yaml`,
`prompt.txt`, or any one job file) and the images it names. The watcher takes it once nothing
in it has changed for `settle_seconds` and it holds exactly one job file; it is claimed by
renaming the whole directory into processing/ and moves as one into done/ or failed/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hotfolder.config.fields import Limits
from hotfolder.jobfile import list_folder

JOB_FILE_NAMES = ("job.json", "job.yaml", "job.yml", "prompt.txt")
JOB_FILE_EXTENSIONS = (".txt", ".json", ".yaml", ".yml", ".csv", ".jsonl")


def job_file_in(files: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(the job file of a folder, or None and why not)."""
    named = [n for n in JOB_FILE_NAMES if n in files]
    if len(named) > 1:
        return None, f"it holds both {' and '.join(named)}; keep one"
    if named:
        return named[0], None
    candidates = sorted(n for n in files if not n.startswith(".")
                        and Path(n).suffix.lower() in JOB_FILE_EXTENSIONS)
    if len(candidates) == 1:
        return candidates[0], None
    if candidates:
        return None, (f"it holds {len(candidates)} possible job files ({', '.join(candidates)}); "
                      f"call the one to run {JOB_FILE_NAMES[0]} or {JOB_FILE_NAMES[-1]}")
    return None, (f"it holds no job file ({', '.join(JOB_FILE_NAMES)}, or one .txt/.json/.yaml "
                  "file)")


def folder_signature(path: Path, limits: Limits) -> tuple[Any, ...]:
    """Changes whenever anything in the job folder does: the watcher's settle test."""
    return list_folder(path, limits.max_folder_files).signature


def folder_not_ready(path: Path, limits: Limits) -> str | None:
    """Why a settled directory in the inbox is not (yet) a job to take, or None.

    Limits are not checked here: a folder over them is taken and failed with the reason."""
    listing = list_folder(path, limits.max_folder_files)
    if listing.refusal:
        return listing.refusal
    if listing.arriving:
        return f"{listing.arriving!r} in it is still being copied"
    if not listing.files and not listing.truncated:
        return "it is empty"
    name, problem = job_file_in(listing.files)
    return None if name or listing.truncated else problem


# -- binding a job's images (called from Pipeline.prepare) -------------------------------------
