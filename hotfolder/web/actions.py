"""What the page may change on disk: a failed job moved back to the inbox, nothing else.

The job file is moved first and its error file removed after, so an interruption between the
two leaves the job in the inbox (where it runs again) and a stale error file, never a failed job
without its reason. The move never overwrites: a file of the same name already waiting in the
inbox makes this one `NAME-2.ext`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

from hotfolder.config.model import FolderConfig
from hotfolder.job.naming import error_name_for
from hotfolder.moves import move
from hotfolder.web.thumbs import safe_name

log = structlog.get_logger()


class ActionError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def retry_failed(folder: FolderConfig, name: str, *, client: str = "") -> Path:
    """Move failed/NAME back into the inbox and remove NAME's error file."""
    if not isinstance(name, str) or not safe_name(name) \
            or Path(name).suffix.lower() not in folder.extensions:
        raise ActionError(404, "no such failed job")
    error_file = folder.failed / error_name_for(name)
    if name.endswith(".error.json") and not error_file.exists():
        raise ActionError(404, "no such failed job")  # an error file, not a job
    source = folder.failed / name
    try:
        info = os.lstat(source)
    except OSError:
        raise ActionError(404, "no such failed job (already retried?)") from None
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise ActionError(404, "no such failed job")  # symlinks and hard links stay put
    try:
        target = move(source, folder.inbox, name)
    except FileNotFoundError:
        raise ActionError(404, "no such failed job (already retried?)") from None
    except OSError as exc:
        log.warning("job.retry_failed", job=name, folder=folder.name, error=str(exc))
        raise ActionError(500, f"could not move the job back to the inbox: {exc}") from exc
    error_file.unlink(missing_ok=True)
    log.info("job.retry_requested", job=name, folder=folder.name, inbox_name=target.name,
             via="status page", client=client)
    return target
