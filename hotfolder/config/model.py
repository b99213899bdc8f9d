"""The configuration as the rest of hotfolder sees it: frozen, typed, already checked.

load.py builds these from YAML; nothing else constructs them from user input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hotfolder.config.fields import Limits
from hotfolder.config.http import HttpConfig
from hotfolder.config.servers import ServerConfig
from hotfolder.config.webhooks import WebhookConfig
from hotfolder.retry import Backoff

# how long a job's owner on another machine may stay silent before its jobs are taken over
LEASE_SECONDS = 120.0
DEFAULT_EXTENSIONS = (".txt", ".json", ".yaml", ".yml", ".csv", ".jsonl")


@dataclass(frozen=True)
class ComfyConfig:
    """How hotfolder talks to every ComfyUI server."""

    request_timeout: float = 30.0
    poll_interval: float = 1.0
    max_in_flight: int = 2
    retries_5xx: int = 3
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    job_timeout: float = 3600.0
    failover_seconds: float = 10.0  # a server silent this long: its jobs go to another
    max_output_bytes: int = 4 * 1024**3  # a bigger /view answer is cut off, the job failed
    max_outputs: int = 1000  # output files of one job (each run of a batch)
    max_job_output_bytes: int = 64 * 1024**3  # all output files of one job together
    max_answer_bytes: int = 64 * 1024**2  # a JSON answer or WebSocket message of a server
    download_timeout: float = 3600.0  # seconds for one output file, in all
    min_download_rate: int = 10 * 1024  # bytes/s over each 30 s of a download
    delete_history: bool = False
    websocket: bool = True

    @property
    def backoff(self) -> Backoff:
        """Waits between tries of a server that is away or failing (retry.py)."""
        return Backoff(self.backoff_initial, self.backoff_max)


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    workflow: Mapping[str, Any]  # never mutated: each job patches its own deep copy
    bindings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source_format: str = "api"  # "gui": the editor's Save, converted per server for each job


@dataclass(frozen=True)
class OutputPolicy:
    """What a folder hands over: ComfyUI's files as written (the default), or re-encoded, or
    without the prompt and workflow ComfyUI embeds in them (job/convert_output.py)."""

    format: str = "png"  # png: as ComfyUI wrote them | jpeg | webp: still images re-encoded
    quality: int = 90  # jpeg and webp
    metadata: str = "keep"  # keep | strip: PNG text chunks (prompt, workflow) removed

    @property
    def untouched(self) -> bool:
        """Every file delivered byte for byte, never opened: what hotfolder always did."""
        return self.format == "png" and self.metadata == "keep"


@dataclass(frozen=True)
class ScheduleConfig:
    """Which waiting job goes to which server (daemon/schedule.py): `models` keeps each server
    on the models it has loaded, within the bounds below; `fifo` takes jobs in drop order."""

    policy: str = "models"  # models | fifo; both put higher priorities first
    max_reorder_seconds: float = 120.0  # a job ready this long is overtaken no more
    max_overtaken: int = 20  # ... nor one that this many later jobs overtook
    switch_wait_seconds: float = 0.25  # a job that makes a server load models waits this long


SUBFOLDERS = ("inbox", "processing", "outbox", "done", "failed")


@dataclass(frozen=True)
class FolderConfig:
    name: str
    root: Path
    template: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    settle_seconds: float = 1.0
    include_temp_outputs: bool = False
    job_timeout: float | None = None
    watch: str = "auto"  # auto | native | poll
    ready: str = "auto"  # auto: from the writer where it can be seen | settle: the clock only
    rescan_seconds: float = 30.0
    ignore: tuple[str, ...] = ()
    server_tags: tuple[str, ...] = ()  # only servers with one of these tags (none: any)
    limits: Limits = field(default_factory=Limits)
    accept_workflows: bool = True  # whole API workflows dropped as jobs
    deny_classes: tuple[str, ...] = ()  # node class_types a job may never run (patterns)
    allow_set: tuple[str, ...] = ("*",)  # NODE.INPUT patterns `set:` may change
    file_mode: int | None = None  # permissions for outputs and moved files, e.g. 0o664
    prune_days: float | None = None  # delete files in done/ and failed/ older than this
    txt_mode: str = "whole"  # whole: a .txt is one prompt | lines: one prompt per line
    batch_fail: str = "all"  # a batch goes to failed/ when all its runs failed | any did
    image_mode: str = "off"  # per-file: an image dropped alone is a job (images count as jobs)
    image_wait_seconds: float = 10.0  # an image a job names, not in the inbox yet, is waited for
    output: OutputPolicy = field(default_factory=OutputPolicy)
    priority: int = 0  # higher goes first; a job's own `priority` adds to it (limits bound it)
    # each defaults to <root>/<name>; outbox, done and failed may live on another file system
    dirs: Mapping[str, Path] = field(default_factory=dict)

    def _dir(self, name: str) -> Path:
        # the folder properties are cached: they are asked for many times per job
        return self.dirs.get(name) or self.root / name

    @cached_property
    def inbox(self) -> Path:
        return self._dir("inbox")

    @cached_property
    def processing(self) -> Path:
        return self._dir("processing")

    @cached_property
    def outbox(self) -> Path:
        return self._dir("outbox")

    @cached_property
    def done(self) -> Path:
        return self._dir("done")

    @cached_property
    def failed(self) -> Path:
        return self._dir("failed")

    def all_dirs(self) -> list[Path]:
        return [self._dir(name) for name in SUBFOLDERS]


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"  # auto | console | json


@dataclass(frozen=True)
class Config:
    path: Path | None
    servers: tuple[ServerConfig, ...]
    comfy: ComfyConfig
    templates: Mapping[str, Template]
    folders: tuple[FolderConfig, ...]
    log: LogConfig
    stop_grace_seconds: float = 30.0  # keep below systemd's TimeoutStopSec
    lease_seconds: float = LEASE_SECONDS
    http: HttpConfig = field(default_factory=HttpConfig)  # the status page; off by default
    webhooks: tuple[WebhookConfig, ...] = ()  # where finished jobs are announced
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
