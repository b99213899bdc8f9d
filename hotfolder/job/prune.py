"""Keeping done/ and failed/ from growing forever: `prune_days` (off by default).

A finished job's file (or job folder) has its mtime set when it is filed away, so its age is
the time since it finished, whatever the file's own history.
"""

from __future__ import annotations

import shutil
import time

import structlog

from hotfolder.config.model import FolderConfig

log = structlog.get_logger()


def prune(folder: FolderConfig, now: float | None = None) -> int:
    """Delete files in done/ and failed/ finished more than `prune_days` ago (off by default)."""
    if folder.prune_days is None:
        return 0
    cutoff = (now or time.time()) - folder.prune_days * 86400
    removed = 0
    for directory in (folder.done, folder.failed):
        for entry in directory.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
                elif entry.is_dir() and not entry.is_symlink() \
                        and entry.stat().st_mtime < cutoff:  # a job folder
                    shutil.rmtree(entry)
                    removed += 1
            except OSError as exc:
                log.warning("folder.prune_failed", file=str(entry), error=str(exc))
    if removed:
        log.info("folder.pruned", folder=folder.name, removed=removed, days=folder.prune_days)
    return removed
