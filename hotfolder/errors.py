"""One exception hierarchy, so the pipeline decides "fail the job" or "retry later" by type alone.

`JobError` is the job's own fault: the file goes to failed/ with the message as its reason.
`ServerError` is the server's fault: the job waits and is tried again; it never fails a job
by itself.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class HotfolderError(Exception):
    """Base of everything hotfolder raises on purpose."""


class ConfigError(HotfolderError):
    """The configuration is invalid; `problems` holds every "key.path: what is wrong" line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Kind(str, Enum):
    """Why a job failed, in one word: the `kind` of its error file and a `/metrics` label, so
    the set is closed and its values are a public interface."""

    JOB = "job"
    INVALID = "invalid"  # the job file or spec says something impossible
    UNREADABLE = "unreadable"  # not UTF-8, unreadable, empty
    CHANGING = "changing"  # the file kept changing while hotfolder read it
    TOO_LARGE = "too_large"  # over a size, count or depth limit
    REFUSED = "refused"  # not a file hotfolder may take (a link, a device, a swapped file)
    PATCH = "patch"  # a field or set: the template cannot take
    CONVERSION = "conversion"  # a GUI workflow that cannot be converted
    MISSING_IMAGE = "missing_image"
    INVALID_IMAGE = "invalid_image"
    UPLOAD = "upload"
    REJECTED = "rejected"  # ComfyUI refused the prompt (validation)
    EXECUTION_ERROR = "execution_error"  # a node failed while running
    NO_OUTPUT = "no_output"
    DOWNLOAD = "download"
    TIMEOUT = "timeout"  # the job time limit
    SERVER_ERROR = "server_error"  # 5xx answers past the retry budget
    CANCELLED = "cancelled"
    CRASHED = "crashed"  # hotfolder died on it too often
    BATCH_FAILED = "batch_failed"
    INTERNAL = "internal"  # a bug in hotfolder

    def __str__(self) -> str:  # in messages, logs and labels: the word itself
        return self.value


class JobError(HotfolderError):
    """The job cannot run as given. `message` is written for the person who dropped the file.

    `incomplete` marks what a file cut short would also cause (truncated JSON, YAML or UTF-8,
    an empty file): for a file modified moments ago it means "wait and read it again", not yet
    "fail the job".
    """

    def __init__(self, message: str, *, kind: Kind = Kind.JOB,
                 details: dict[str, Any] | None = None, incomplete: bool = False):
        self.message = message
        self.kind = Kind(kind)
        self.details = details or {}
        self.incomplete = incomplete
        super().__init__(message)


class Cancelled(JobError):
    """A `.cancel` file asked for the job, or its file was taken out of processing/: it ends in
    failed/ like a job error, but a batch stops its other runs instead of counting it as one
    run's failure."""

    def __init__(self, reason: str, *, details: dict[str, Any] | None = None) -> None:
        self.reason = reason
        super().__init__(f"cancelled: {reason}", kind=Kind.CANCELLED, details=details)


class ServerError(HotfolderError):
    """ComfyUI is unreachable, restarting or answered 5xx: try again later. (A bounded number
    of 5xx answers to one job's submission turns into a job failure carrying the server's own
    text: see submit.py.)"""

    def __init__(self, message: str, *, server: str = "", status: int | None = None,
                 body: str = "", uncertain: bool = False) -> None:
        self.message = message
        self.server = server
        self.status = status
        self.body = body
        # the request may have reached the server and taken effect all the same (a 5xx, a
        # time-out or a connection lost after sending): a POST /prompt may have queued it
        self.uncertain = uncertain
        super().__init__(message)


class Stopping(Exception):
    """The daemon is shutting down: leave the job in processing/ for the next start.

    Not a HotfolderError: it says nothing about the job or the server, and must never be
    caught as either.
    """


class Parked(Exception):
    """The job waits for its server (a download broke off, or the server has as many downloads
    going as it has slots): its worker is freed for other servers' jobs, and the job is picked
    up again after `seconds`, where it left off. Like `Stopping`, not a HotfolderError."""

    def __init__(self, seconds: float, reason: str) -> None:
        self.seconds = seconds
        self.reason = reason
        super().__init__(reason)


class PromptLost(HotfolderError):
    """The server no longer knows the job's prompt (it restarted, or its queue was cleared):
    submit it again."""


class Failover(HotfolderError):
    """The job's server has been unreachable too long while others answer: run it elsewhere."""
