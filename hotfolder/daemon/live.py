"""The daemon's live status: its jobs in flight, the servers, the files a writer still holds.

Written next to each folder's jobs (`processing/.hotfolder-status.json`) when it changes, or
every few seconds to show the daemon lives (a file older than 15 s means "not running"; a
daemon that stops says so in its last one, and one killed on this machine is seen gone), so an
idle daemon with nothing new to say costs next to nothing (no JSON, no fsync every second on a
NAS). `hotfolder status` and the status page read it (status.py).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Protocol

import structlog

from hotfolder.comfy.pool import ServerPool
from hotfolder.config.model import FolderConfig
from hotfolder.daemon.status import status_path
from hotfolder.fsutil import write_json
from hotfolder.job.state import HOST, JobState

log = structlog.get_logger()

REFRESH_SECONDS = 5.0  # rewritten at least this often


class Watcher(Protocol):
    def being_written(self, now: float | None = None) -> dict[str, list[dict[str, Any]]]: ...


Owned = list[tuple[FolderConfig, JobState]]


def live_doc(folder: FolderConfig, jobs: list[dict[str, Any]], servers: list[dict[str, Any]],
             being_written: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The daemon's live part for one folder: its jobs in flight, the files in its inbox a
    writer still holds open (so a stuck writer is visible), and the servers."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "node": HOST,
            "updated_at": time.time(), "folder": folder.name, "jobs": jobs,
            "being_written": being_written or [], "servers": servers}


def write_live(folder: FolderConfig, jobs: list[dict[str, Any]], servers: list[dict[str, Any]],
               being_written: list[dict[str, Any]] | None = None) -> None:
    # rewritten every second while jobs run: compact (json's C encoder; the indenting one is
    # pure Python) and without an fsync (a power cut that loses it has stopped the daemon,
    # which a stale file already says)
    write_json(status_path(folder), live_doc(folder, jobs, servers, being_written),
               replace=True, compact=True, durable=False)


def jobs_in_flight(owned: Owned, pool: ServerPool) -> dict[str, list[dict[str, Any]]]:
    """Our jobs in flight by folder, as the status document lists them."""
    jobs_by_folder: dict[str, list[dict[str, Any]]] = {}
    now = time.time()
    for folder, state in owned:
        jobs_by_folder.setdefault(folder.name, []).append({
            "job": state.source or state.name, "name": state.name, "phase": state.phase,
            "server": state.server, "prompt_id": state.prompt_id,
            "model_switch": state.model_switch if state.models is not None else None,
            "progress": pool.progress(state.server, state.prompt_id),
            "age_seconds": round(now - state.claimed_at, 1)})
    return jobs_by_folder


class LiveStatus:
    def __init__(self) -> None:
        self._key = ""
        self._due = 0.0

    def write(self, folders: list[FolderConfig], owned: Owned, pool: ServerPool,
              watcher: Watcher, *, force: bool = False) -> None:
        """Rewrite each folder's live status when it changed, or every few seconds."""
        servers = pool.describe()
        now = time.time()
        writing = watcher.being_written(now)
        key = repr((servers, [(s.name, s.phase, s.server, s.prompt_id,
                               pool.progress(s.server, s.prompt_id)) for _, s in owned],
                    [(f, [(w["file"], w["writers"]) for w in files])
                     for f, files in sorted(writing.items())]))
        if not force and key == self._key and now < self._due:
            return
        self._key, self._due = key, now + REFRESH_SECONDS
        jobs_by_folder = jobs_in_flight(owned, pool)
        for folder in folders:
            try:
                write_live(folder, jobs_by_folder.get(folder.name, []), servers,
                           writing.get(folder.name, []))
            except OSError as exc:
                log.warning("status.write_failed", folder=folder.name, error=str(exc))

    def stopped(self, folders: list[FolderConfig], servers: list[dict[str, Any]]) -> None:
        """The last word of a daemon that stops: `status` says "not running" at once, not
        once the file has gone stale."""
        for folder in folders:
            try:
                write_json(status_path(folder), {**live_doc(folder, [], servers),
                                                 "stopped_at": time.time()}, replace=True)
            except OSError as exc:
                log.warning("status.write_failed", folder=folder.name, error=str(exc))

    def documents(self, folders: list[FolderConfig], owned: Owned, pool: ServerPool,
                  watcher: Watcher) -> dict[str, dict[str, Any]]:
        """The live part of every folder, from memory (for the status page)."""
        servers, jobs = pool.describe(), jobs_in_flight(owned, pool)
        writing = watcher.being_written()
        return {f.name: live_doc(f, jobs.get(f.name, []), servers, writing.get(f.name, []))
                for f in folders}
