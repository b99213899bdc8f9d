"""Claim a settled file by an atomic rename into processing/, and keep its state record there.

The rename is the lock: of two processes renaming the same inbox file, exactly one succeeds.
The state record (a hidden JSON file beside the job) says which server and prompt_id the job
went to, so a restarted daemon finds the job again instead of running it twice.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hotfolder.config import FolderConfig
from hotfolder.fsutil import candidates, write_json


@dataclass
class JobState:
    name: str  # the job file's name inside processing/
    folder: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str = ""  # the name it had in the inbox
    detected_at: float | None = None
    claimed_at: float = field(default_factory=time.time)
    owner: dict[str, Any] = field(default_factory=lambda: {"host": socket.gethostname(),
                                                           "pid": os.getpid()})
    server: str | None = None
    prompt_id: str | None = None
    client_id: str | None = None
    submitted_at: float | None = None
    submissions: int = 0
    seed: int | None = None  # chosen once, so a resubmitted job keeps its seed
    out_stem: str | None = None  # the outbox base name, chosen before the first download
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)  # output key -> file
    phase: str = "claimed"  # claimed | submitted | completed | delivering

    @staticmethod
    def path_for(folder: FolderConfig, name: str) -> Path:
        return folder.processing / f".{name}.state.json"

    def save(self, folder: FolderConfig) -> None:
        write_json(self.path_for(folder, self.name), asdict(self), replace=True)

    def drop(self, folder: FolderConfig) -> None:
        self.path_for(folder, self.name).unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: FolderConfig, name: str) -> JobState | None:
        try:
            data = json.loads(cls.path_for(folder, name).read_text(encoding="utf-8"))
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except (OSError, ValueError, TypeError):
            return None


def claim(folder: FolderConfig, path: Path, detected_at: float | None = None) -> JobState | None:
    """Move an inbox file into processing/; None if someone else took it first."""
    folder.processing.mkdir(parents=True, exist_ok=True)
    for name in candidates(path.name):
        target = folder.processing / name
        if target.exists() or JobState.path_for(folder, name).exists():
            continue
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None  # gone: claimed by another process, or deleted by the user
        state = JobState(name=name, folder=folder.name, source=path.name,
                         detected_at=detected_at)
        state.save(folder)
        return state
    return None


def leftovers(folder: FolderConfig) -> list[JobState]:
    """Jobs found in processing/ at start: resumed from their state record, oldest first."""
    if not folder.processing.is_dir():
        return []
    found = []
    for entry in sorted(folder.processing.iterdir(), key=_mtime):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        state = JobState.load(folder, entry.name) or JobState(name=entry.name,
                                                              folder=folder.name,
                                                              source=entry.name)
        found.append(state)
    return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
