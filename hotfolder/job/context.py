"""What the stages of every job share: the config, the server pool, the stop and drain events,
the cancel requests, the crash guard. A single job (pipeline.py) and each run of a batch
(batchrun.py) go through the same stage functions with the same context."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import structlog

from hotfolder.comfy.pool import Server, ServerPool
from hotfolder.config.model import Config, FolderConfig
from hotfolder.errors import Cancelled, ServerError
from hotfolder.job.crashguard import Gate
from hotfolder.job.state import JobState
from hotfolder.retry import pause
from hotfolder.workflow.gui2api.cache import ObjectInfoCache

log = structlog.get_logger()


@dataclass
class Context:
    config: Config
    pool: ServerPool
    stop: threading.Event  # the daemon is stopping: leave every job where it is
    draining: threading.Event  # ... and submit nothing new meanwhile
    # by name; a folder removed by a reload stays known until its last job is finished
    folders: dict[str, FolderConfig] = field(default_factory=dict)
    gate: Gate = field(init=False)  # a job the daemon died on does its risky steps alone
    object_info: ObjectInfoCache = field(default_factory=ObjectInfoCache)  # per server
    _cancels: set[tuple[str, str]] = field(default_factory=set)  # (folder, name in processing/)
    _cancel_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate = Gate(self.stop)
        self.update(self.config)

    def update(self, config: Config) -> None:
        self.config = config
        self.folders.update({f.name: f for f in config.folders})

    def folder(self, name: str) -> FolderConfig:
        return self.folders[name]

    def wait(self, seconds: float) -> None:
        """Sleep, or raise Stopping when the daemon stops."""
        pause(self.stop, seconds)

    # -- cancelling ------------------------------------------------------------------------------

    def request_cancel(self, folder: FolderConfig, state: JobState) -> None:
        """Ask a running job to stop (a `.cancel` file); it notices within moments."""
        with self._cancel_lock:
            self._cancels.add((folder.name, state.name))
        server = self.pool.by_name(state.server)
        if server is not None and state.prompt_id:
            server.listener.wake(state.prompt_id)

    def clear_cancel(self, folder: FolderConfig, state: JobState) -> None:
        with self._cancel_lock:
            self._cancels.discard((folder.name, state.name))

    def check_cancelled(self, folder: FolderConfig, state: JobState) -> None:
        """Raise Cancelled if the job was asked to stop, or its file left processing/; its
        prompt is taken off its server first."""
        with self._cancel_lock:
            asked = (folder.name, state.name) in self._cancels
            self._cancels.discard((folder.name, state.name))
        if not asked and (folder.processing / state.name).exists():
            return
        reason = ("a .cancel file asked for it" if asked
                  else "its file was removed from processing/")
        server = self.pool.by_name(state.server)
        if server is not None and state.prompt_id:
            self.abandon(server, state.prompt_id)
        log.info("job.cancelled", reason=reason, prompt_id=state.prompt_id)
        raise Cancelled(reason)

    def abandon(self, server: Server, prompt_id: str) -> None:
        """Take a prompt off a server's queue, or interrupt it if it is running."""
        try:
            server.client.cancel(prompt_id)
        except ServerError as exc:
            log.warning("job.abandon_failed", server=server.name, error=exc.message)
