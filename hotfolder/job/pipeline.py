"""One claimed job from processing/ to done/ or failed/: parse, patch, submit, complete, deliver.

This is the one place that decides between "fail the job" and "retry later": a `JobError` ends
the job in failed/ with its message; a `ServerError` makes the job wait and try again, however
long the server is away (a bounded number of 5xx answers excepted, which then fail the job with
the server's own text). A stop request leaves the job in processing/ with its state record, to be
resumed by the next start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import structlog

from hotfolder import crashpoints
from hotfolder.comfy.pool import Reservation, Server, ServerPool
from hotfolder.config.model import Config, FolderConfig
from hotfolder.errors import JobError, Kind, Parked, Stopping
from hotfolder.job.batchrun import BatchRun
from hotfolder.job.context import Context
from hotfolder.job.crashguard import MAX_CRASHES, RISKY_PHASES
from hotfolder.job.deliver import fetch
from hotfolder.job.finish import finish_done, finish_failed, timings
from hotfolder.job.intake import StillWritten, read_job, verify_content, wait_out
from hotfolder.job.prepare import prepare
from hotfolder.job.state import JobState, Outcome, Record
from hotfolder.job.submit import execute
from hotfolder.outdir import OutDir

log = structlog.get_logger()


class Pipeline:
    """Runs claimed jobs (any number at once, one per worker thread) through the stages."""

    def __init__(self, config: Config, pool: ServerPool, stop: threading.Event,
                 draining: threading.Event | None = None) -> None:
        self.ctx = Context(config, pool, stop, draining or threading.Event())

    @property
    def stop(self) -> threading.Event:
        return self.ctx.stop

    def update(self, config: Config) -> None:
        self.ctx.update(config)

    def folder(self, name: str) -> FolderConfig:
        return self.ctx.folder(name)

    def request_cancel(self, folder: FolderConfig, state: JobState) -> None:
        self.ctx.request_cancel(folder, state)

    def run(self, folder: FolderConfig, state: JobState,
            slot: Reservation | None = None) -> Outcome:
        """`slot`: a server slot the scheduler reserved for the job, where it is submitted."""
        path = folder.processing / state.name
        record = Record(job=state.source or state.name, folder=folder.name)
        with structlog.contextvars.bound_contextvars(job=record.job, folder=folder.name):
            try:
                return self._attempts(folder, state, record, slot)
            except JobError as exc:
                return finish_failed(folder, state, exc, record, self.ctx.config.webhooks)
            except Parked as later:
                state.phase = "parked"  # waiting for its server: not a risky phase
                state.save(folder)
                log.info("job.parked", reason=later.reason, retry_seconds=round(later.seconds, 1),
                         prompt_id=state.prompt_id, server=state.server,
                         note="its worker is free for other jobs meanwhile")
                return Outcome("parked", job_file=path, retry_in=later.seconds)
            except Stopping:
                if state.phase in RISKY_PHASES:  # a clean stop: no death to count
                    state.phase = "stopped"
                state.save(folder)  # the phase as it is now (some changes are not saved)
                log.info("job.left_in_processing", reason="daemon stopping",
                         prompt_id=state.prompt_id, note="resumed at the next start")
                return Outcome("left", job_file=path)
            except Exception as exc:  # a bug must not kill the daemon or strand the job
                log.exception("job.internal_error")
                error = JobError(f"hotfolder hit an internal error handling this job "
                                 f"({type(exc).__name__}: {exc}); please report it",
                                 kind=Kind.INTERNAL)
                return finish_failed(folder, state, error, record, self.ctx.config.webhooks)

    def _attempts(self, folder: FolderConfig, state: JobState, record: Record,
                  slot: Reservation | None) -> Outcome:
        """Read, run and deliver; again whenever the job file turns out to be still written."""
        if state.crashes >= MAX_CRASHES:
            raise JobError(f"hotfolder stopped while handling this job {state.crashes} times; "
                           "it is not tried again (its file may trip a fault in hotfolder: "
                           "please report it with the job file)", kind=Kind.CRASHED,
                           details={"crashes": state.crashes})
        ctx = self.ctx
        settled = final = False
        while True:
            try:
                with ctx.gate.passage(suspect=state.crashes > 0):
                    self._enter(folder, state, "preparing")
                    crashpoints.reached("start", state.source, state.name)
                    spec = read_job(folder, state, settled=settled, final=final)
                    record.job_file = state.read
                    state.priority = folder.priority + spec.priority
                    record.priority = state.priority or None
                    if spec.kind != "batch":
                        workflow = prepare(ctx, folder, state, spec, record)
                    # prepared: waits for a slot, unless it holds one already and goes
                    # straight on to the submit's own save (see _submits_at_once)
                    self._enter(folder, state, "claimed",
                                save=not _submits_at_once(state, spec.kind, slot))
                if spec.kind == "batch":
                    if slot is not None:
                        slot.cancel()  # each run takes a slot of its own
                    return BatchRun(ctx, folder, state, spec, record).run()
                if state.expected is not None and len(state.delivered) >= state.expected:
                    # every output was already delivered before a restart: just finish
                    verify_content(folder, state)
                    record.server, record.prompt_id = state.server, state.prompt_id
                    record.timings = timings(state, time.time())
                    return finish_done(folder, state, record, list(state.delivered.values()),
                                       ctx.config.webhooks)
                entry, server = execute(ctx, folder, state, workflow, record, slot)
                return self._deliver(folder, state, entry, server, workflow, record)
            except StillWritten as again:
                if slot is not None:
                    slot.cancel()  # it may take a while: a server slot is not held meanwhile
                wait_out(folder, state, again, record, wait=ctx.wait,
                         check=lambda: ctx.check_cancelled(folder, state))
                settled, final = True, again.error is not None

    @staticmethod
    def _enter(folder: FolderConfig, state: JobState, phase: str, *, save: bool = True) -> None:
        """Note what the daemon does with the job, for the crash guard: a daemon that dies
        while the record says a risky phase may have died of the job. Only a crash of this
        process needs to see it, so the record is not fsync'd here."""
        if state.phase != phase or not state.saved:
            state.phase = phase
            if save:
                state.save(folder, durable=False)

    def _deliver(self, folder: FolderConfig, state: JobState, entry: dict[str, Any],
                 server: Server, workflow: Mapping[str, Any], record: Record) -> Outcome:
        folder.outbox.mkdir(parents=True, exist_ok=True)
        with self.ctx.gate.passage(suspect=state.crashes > 0), \
                OutDir(folder.outbox, follow=True) as outbox:  # the configured outbox: ours
            files = fetch(self.ctx, folder, state, entry, server, workflow, record, outbox)
        verify_content(folder, state)  # what goes to done/ is what ran, or it runs again
        return finish_done(folder, state, record, files, self.ctx.config.webhooks)


def _submits_at_once(state: JobState, kind: str, slot: Reservation | None) -> bool:
    """A new job (never submitted) holding a server slot, with no images to upload: nothing
    lies between its preparation and the submit, which saves the record (phase `submitting`)
    before its POST, and every way out before that saves it too (a stop, a file still being
    written, a failure). Its `claimed` phase then needs no write of its own: one write a job
    fewer, and the record says `preparing` only for the moment the submit takes to begin."""
    images = state.life.images
    return (slot is not None and slot.server is not None and kind != "batch"
            and state.prompt_id is None
            and (images is None or not images.bound))
