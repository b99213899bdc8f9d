"""One exception hierarchy, so the pipeline decides "fail the job" or "retry later" by type alone.

`JobError` is the job's own fault: the file goes to failed/ with the message as its reason.
`ServerError` is the server's fault: the job waits and is tried again; it never fails a job
by itself.
"""

from __future__ import annotations

from typing import Any


class HotfolderError(Exception):
    """Base of everything hotfolder raises on purpose."""


class ConfigError(HotfolderError):
    """The configuration is invalid; `problems` holds every "key.path: what is wrong" line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class JobError(HotfolderError):
    """The job cannot run as given. `message` is written for the person who dropped the file.

    `incomplete` marks what a file cut short would also cause (truncated JSON, YAML or UTF-8,
    an empty file): for a file modified moments ago it means "wait and read it again", not yet
    "fail the job".
    """

    def __init__(self, message: str, *, kind: str = "job", details: dict[str, Any] | None = None,
                 incomplete: bool = False):
        self.message = message
        self.kind = kind
        self.details = details or {}
        self.incomplete = incomplete
        super().__init__(message)


class ServerError(HotfolderError):
    """ComfyUI is unreachable, restarting or answered 5xx: try again later.

    `retryable` is False once a bounded retry budget is spent (e.g. repeated 5xx); the pipeline
    then turns it into a job failure carrying the server's own text.
    """

    def __init__(self, message: str, *, server: str = "", status: int | None = None,
                 body: str = "") -> None:
        self.message = message
        self.server = server
        self.status = status
        self.body = body
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
