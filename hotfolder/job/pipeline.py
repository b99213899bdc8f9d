"""One claimed job from processing/ to done/ or failed/: parse, patch, submit, complete, deliver.

This is the one place that decides between "fail the job" and "retry later": a `JobError` ends
the job in failed/ with its message; a `ServerError` makes the job wait and try again, however
long the server is away (a bounded number of 5xx answers excepted, which then fail the job with
the server's own text). A stop request leaves the job in processing/ with its state record, to be
resumed by the next start.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from hotfolder.comfy.explain import explain_history_failure
from hotfolder.comfy.pool import Server, ServerPool
from hotfolder.config.load import Config, FolderConfig
from hotfolder.errors import JobError, Parked, ServerError, Stopping
from hotfolder.job.batchrun import BatchRun
from hotfolder.job.crashguard import MAX_CRASHES, RISKY_PHASES, Gate
from hotfolder.job.deliver import collect_outputs, deliver_all
from hotfolder.job.finish import finish_done, finish_failed, timings
from hotfolder.job.images import upload as upload_images
from hotfolder.job.intake import StillWritten, read_job, verify_content, verify_unchanged, wait_out
from hotfolder.job.parse import JobSpec
from hotfolder.job.prepare import Preparer
from hotfolder.job.state import JobState, Outcome
from hotfolder.outdir import OutDir

log = structlog.get_logger()

HISTORY_LAG_TRIES = 40  # `execution_success` arrives before the history entry is written


class _Gone(Exception):
    """The server no longer knows the prompt (restarted, or the queue was cleared)."""


class _Failover(Exception):
    """The server has been unreachable too long while others answer: run the job elsewhere."""


class Pipeline:
    def __init__(self, config: Config, pool: ServerPool, stop: threading.Event,
                 draining: threading.Event | None = None) -> None:
        self.config = config
        self.pool = pool
        self.stop = stop
        self.draining = draining or threading.Event()
        # by name; a folder removed by a reload stays known until its last job is finished
        self.folders = {f.name: f for f in config.folders}
        self._cancels: set[tuple[str, str]] = set()  # (folder, name in processing/)
        self.gate = Gate(stop)  # a job the daemon died on does its risky steps alone
        self.preparer = Preparer(config, pool, stop, self._check_cancelled)
        self._cancel_lock = threading.Lock()

    def update(self, config: Config) -> None:
        self.config = self.preparer.config = config
        self.folders.update({f.name: f for f in config.folders})

    def folder(self, name: str) -> FolderConfig:
        return self.folders[name]

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

    def _check_cancelled(self, folder: FolderConfig, state: JobState) -> None:
        with self._cancel_lock:
            asked = (folder.name, state.name) in self._cancels
            self._cancels.discard((folder.name, state.name))
        if not asked and (folder.processing / state.name).exists():
            return
        reason = ("a .cancel file asked for it" if asked
                  else "its file was removed from processing/")
        server = self.pool.by_name(state.server)
        if server is not None and state.prompt_id:
            self._abandon(server, state.prompt_id)
        log.info("job.cancelled", reason=reason, prompt_id=state.prompt_id)
        raise JobError(f"cancelled: {reason}", kind="cancelled")

    def run(self, folder: FolderConfig, state: JobState) -> Outcome:
        path = folder.processing / state.name
        record: dict[str, Any] = {"job": state.source or state.name, "folder": folder.name}
        with structlog.contextvars.bound_contextvars(job=record["job"], folder=folder.name):
            try:
                return self._attempts(folder, state, record)
            except JobError as exc:
                return finish_failed(folder, state, exc, record)
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
                                 kind="internal")
                return finish_failed(folder, state, error, record)

    def _attempts(self, folder: FolderConfig, state: JobState, record: dict[str, Any]) -> Outcome:
        """Read, run and deliver; again whenever the job file turns out to be still written."""
        if state.crashes >= MAX_CRASHES:
            raise JobError(f"hotfolder stopped while handling this job {state.crashes} times; "
                           "it is not tried again (its file may trip a fault in hotfolder: "
                           "please report it with the job file)", kind="crashed",
                           details={"crashes": state.crashes})
        settled = final = False
        while True:
            try:
                with self.gate.passage(suspect=state.crashes > 0):
                    self._enter(folder, state, "preparing")
                    _test_fault(state)
                    spec = read_job(folder, state, settled=settled, final=final)
                    record["job_file"] = state.read
                    if spec.kind != "batch":
                        workflow = self.prepare(folder, state, spec, record)
                    self._enter(folder, state, "claimed")  # prepared: waits for a slot
                if spec.kind == "batch":
                    return BatchRun(self, folder, state, spec, record).run()
                if state.expected is not None and len(state.delivered) >= state.expected:
                    # every output was already delivered before a restart: just finish
                    verify_content(folder, state)
                    record.update(server=state.server, prompt_id=state.prompt_id,
                                  timings=timings(state, time.time()))
                    return finish_done(folder, state, record, list(state.delivered.values()))
                entry, server = self.execute(folder, state, workflow, record)
                return self.deliver(folder, state, entry, server, workflow, record)
            except StillWritten as again:
                wait_out(folder, state, again, record, wait=self._wait,
                         check=lambda: self._check_cancelled(folder, state))
                settled, final = True, again.error is not None

    @staticmethod
    def _enter(folder: FolderConfig, state: JobState, phase: str) -> None:
        """Note what the daemon does with the job. A job without a record yet gets it only at
        its submission (or after a second, from the loop), as before: a death before then is
        counted from the missing record (claim.adopt)."""
        state.phase = phase
        if state.saved:
            state.save(folder)

    # -- parse + patch (prepare.py) ------------------------------------------------------------

    def prepare(self, folder: FolderConfig, state: JobState, spec: JobSpec,
                record: dict[str, Any]) -> dict[str, Any]:
        return self.preparer.prepare(folder, state, spec, record)

    def _wait(self, seconds: float) -> None:
        self.preparer.wait(seconds)

    # -- submit + complete --------------------------------------------------------------------

    def execute(self, folder: FolderConfig, state: JobState, workflow: dict[str, Any],
                record: dict[str, Any]) -> tuple[dict[str, Any], Server]:
        limit = folder.job_timeout or self.config.comfy.job_timeout
        failures_5xx = 0
        server: Server | None = None
        try:
            while True:
                if self.stop.is_set():
                    raise Stopping
                self._check_cancelled(folder, state)
                known = self.pool.by_name(state.server) if state.prompt_id else None
                if known is not None and server is None:
                    server = self.pool.attach(known)  # resumed: it is in flight there already
                if known is not None and state.prompt_id:
                    try:
                        entry = self.follow(known, state, workflow, limit, folder.server_tags)
                    except _Gone:
                        log.warning("job.lost_by_server", server=known.name,
                                    prompt_id=state.prompt_id,
                                    action="the server forgot the prompt (restart?); resubmitting")
                        state.prompt_id = None
                        continue
                    except _Failover:
                        log.warning("job.moved", server=known.name, prompt_id=state.prompt_id,
                                    action="server unreachable; resubmitting on another server")
                        state.prompt_id = None
                        if server is not None:
                            self.pool.release(server)
                            server = None
                        continue
                    record.update(server=known.name, prompt_id=state.prompt_id)
                    return entry, known
                if server is None:
                    server = self.pool.acquire(folder.server_tags)
                    if server is None:
                        raise Stopping
                    continue  # the wait for a slot may have been long: check cancel again
                if state.submissions == 0:
                    verify_unchanged(folder, state)  # the file may have changed while it waited
                try:
                    self.submit(server, state, workflow)
                except ServerError as exc:
                    failures_5xx = self._after_submit_error(server, exc, failures_5xx)
                    if not server.up:
                        self.pool.release(server)
                        server = None
        finally:
            if server is not None:
                self.pool.release(server)

    def submit(self, server: Server, state: JobState, workflow: dict[str, Any]) -> None:
        if self.draining.is_set():
            raise Stopping  # shutting down: submit nothing new
        with state.life.upload_lock:
            upload_images(server.client, server.name, state, workflow, state.life.images,
                          save=lambda: state.save(self.folder(state.folder)))
        prompt_id = str(uuid.uuid4())
        watch = server.listener.watch(prompt_id, job=state.source, folder=state.folder)
        # record the id before the POST: after a crash the job is found again by it
        state.server, state.prompt_id, state.client_id = server.name, prompt_id, watch.client_id
        state.phase, state.submitted_at = "submitting", time.time()
        state.submissions += 1
        state.save(self.folder(state.folder))
        try:
            server.client.submit(workflow, prompt_id=prompt_id, client_id=watch.client_id)
        except (ServerError, JobError) as exc:
            server.listener.forget(prompt_id)
            state.prompt_id = None
            state.phase = "claimed"
            state.save(self.folder(state.folder))
            if isinstance(exc, JobError) and exc.details.get("partial_prompt_id"):
                # ComfyUI queued the valid part of the graph anyway; the job failed, so stop it
                self._abandon(server, str(exc.details["partial_prompt_id"]))
            raise
        self.pool.mark_up(server)
        # not saved: after a crash, "submitting" and "submitted" are resumed alike (the
        # prompt id is looked up on the server), so the record needs no second write
        state.phase = "submitted"
        log.info("job.submitted", server=server.name, prompt_id=prompt_id,
                 submission=state.submissions)

    def _after_submit_error(self, server: Server, exc: ServerError, failures_5xx: int) -> int:
        if exc.status is not None and exc.status >= 500:
            failures_5xx += 1
            if failures_5xx > self.config.comfy.retries_5xx:
                raise JobError(f"ComfyUI kept answering HTTP {exc.status} to this job "
                               f"({failures_5xx} times); the server said: "
                               f"{exc.body.strip() or '(nothing)'}", kind="server_error",
                               details={"server": server.name, "status": exc.status,
                                        "body": exc.body}) from exc
            log.warning("job.submit_retry", server=server.name, status=exc.status,
                        attempt=failures_5xx, limit=self.config.comfy.retries_5xx)
            delay = self.config.comfy.backoff_initial * 2 ** (failures_5xx - 1)
        else:
            self.pool.mark_down(server, exc)
            delay = self.config.comfy.backoff_initial
        if self.stop.wait(min(delay, self.config.comfy.backoff_max)):
            raise Stopping
        return failures_5xx

    def follow(self, server: Server, state: JobState, workflow: Mapping[str, Any],
               limit: float, tags: tuple[str, ...] = ()) -> dict[str, Any]:
        """Wait for the prompt's history entry; raise _Gone if the server forgot it."""
        assert state.prompt_id is not None
        prompt_id, comfy, client = state.prompt_id, self.config.comfy, server.client
        listener = server.listener
        watch = listener.watch(prompt_id, client_id=state.client_id, job=state.source,
                               folder=state.folder)
        deadline = time.monotonic() + limit
        lag_tries = checks = 0
        down_delay = comfy.poll_interval
        try:
            while True:
                live = listener.live_for(watch)
                wait = max(5.0, comfy.poll_interval * 5) if live else comfy.poll_interval
                if watch.finished:
                    wait = min(0.05 * (lag_tries + 1), comfy.poll_interval)
                watch.wake.wait(wait)
                watch.wake.clear()
                if self.stop.is_set():
                    raise Stopping
                self._check_cancelled(self.folder(state.folder), state)
                told = watch.entry(workflow)
                if told is not None:
                    self.pool.mark_up(server)
                    return told
                try:
                    entry = client.history(prompt_id)
                    if entry is not None:
                        self.pool.mark_up(server)
                        return entry
                    checks += 1
                    if watch.finished and lag_tries < HISTORY_LAG_TRIES:
                        lag_tries += 1
                        continue
                    consult_queue = not live or watch.finished or checks % 5 == 0
                    if consult_queue and prompt_id not in client.queue():
                        entry = client.history(prompt_id)  # it may have just finished
                        if entry is not None:
                            return entry
                        raise _Gone
                    down_delay = comfy.poll_interval
                except ServerError as exc:
                    self.pool.mark_down(server, exc)
                    silent_for = time.monotonic() - (server.down_since or time.monotonic())
                    if silent_for >= comfy.failover_seconds and self.pool.others_up(server, tags):
                        raise _Failover from exc
                    started = time.monotonic()
                    if self.stop.wait(down_delay):
                        raise Stopping from exc
                    deadline += time.monotonic() - started  # time limit counts server time only
                    down_delay = min(down_delay * 2, 5.0)
                    continue
                if time.monotonic() > deadline:
                    self._abandon(server, prompt_id)
                    raise JobError(f"the job did not finish within {limit:g} seconds (the job "
                                   "time limit); it was removed from ComfyUI's queue",
                                   kind="timeout", details={"limit_seconds": limit})
        finally:
            listener.forget(prompt_id)

    def _abandon(self, server: Server, prompt_id: str) -> None:
        try:
            server.client.delete_queued(prompt_id)
            server.client.interrupt(prompt_id)
        except ServerError as exc:
            log.warning("job.abandon_failed", server=server.name, error=exc.message)

    # -- deliver + finish -----------------------------------------------------------------------

    def deliver(self, folder: FolderConfig, state: JobState, entry: dict[str, Any],
                server: Server, workflow: Mapping[str, Any], record: dict[str, Any]) -> Outcome:
        folder.outbox.mkdir(parents=True, exist_ok=True)
        with self.gate.passage(suspect=state.crashes > 0), \
                OutDir(folder.outbox, follow=True) as outbox:  # the configured outbox: ours
            files = self.fetch(folder, state, entry, server, workflow, record, outbox)
        verify_content(folder, state)  # what goes to done/ is what ran, or it runs again
        return finish_done(folder, state, record, files)

    def fetch(self, folder: FolderConfig, state: JobState, entry: dict[str, Any],
              server: Server, workflow: Mapping[str, Any], record: dict[str, Any],
              outbox: OutDir, *, park: bool = True) -> list[dict[str, Any]]:
        """The finished prompt's outputs, downloaded into `outbox` (or why there are none)."""
        status = entry.get("status") if isinstance(entry.get("status"), Mapping) else {}
        if status.get("status_str") == "error":
            message, details = explain_history_failure(entry, workflow)
            raise JobError(message, kind="execution_error", details=details)
        outputs = collect_outputs(entry, include_temp=folder.include_temp_outputs)
        if not outputs:
            raise JobError("the workflow produced no output: ComfyUI finished it but reported "
                           "no saved files (does it end in a SaveImage or another save node?)",
                           kind="no_output")
        completed_at = time.time()
        state.phase, state.expected = "delivering", len(outputs)  # saved by deliver_all
        log.info("job.completed", server=server.name, prompt_id=state.prompt_id,
                 outputs=len(outputs))
        if len(outputs) > self.config.comfy.max_outputs:
            raise JobError(f"the workflow produced {len(outputs)} output files; a job may have "
                           f"at most {self.config.comfy.max_outputs} (comfy.max_outputs)",
                           kind="download")
        files = self._download_all(folder, state, server, outputs, outbox, park)
        if self.config.comfy.delete_history and state.prompt_id:
            try:
                server.client.delete_history(state.prompt_id)
            except ServerError as exc:
                log.warning("job.history_delete_failed", error=exc.message)
        record["timings"] = timings(state, completed_at)
        return files

    def _download_all(self, folder: FolderConfig, state: JobState, server: Server,
                      outputs: list[dict[str, Any]], outbox: OutDir,
                      park: bool) -> list[dict[str, Any]]:
        """Download the outputs. A server whose download breaks off (or crawls: see the
        client's limits) is marked down, and the job is parked (`park`, a single job: its
        worker is freed) or waits here (a batch's run, in the batch's own threads). A server
        never has more downloads going than slots, so a stuck one ties up that many workers
        at most."""
        comfy = self.config.comfy
        while True:
            if not server.begin_download():
                if park:
                    raise Parked(1.0, f"{server.name} has {server.limit} downloads going")
                self._wait(0.5)
                continue
            try:
                return deliver_all(server.client, outputs, outbox, state,
                                   save=lambda: state.save(folder), file_mode=folder.file_mode,
                                   max_bytes=comfy.max_output_bytes,
                                   max_total=comfy.max_job_output_bytes,
                                   cancelled=self.stop.is_set)
            except ServerError as exc:
                self.pool.mark_down(server, exc)
                state.life.download_tries += 1
                delay = min(comfy.backoff_initial * 2 ** state.life.download_tries,
                            comfy.backoff_max)
                if park:
                    raise Parked(delay, exc.message) from exc
                self._wait(delay)
            finally:
                server.end_download()


def _test_fault(state: JobState) -> None:
    """For tests of the crashed-job guard only: `HOTFOLDER_TEST_KILL_ON=NAME` kills the daemon
    (SIGKILL, no cleanup) whenever it starts on the job NAME, as a job that trips a fatal
    fault would."""
    if _KILL_ON and _KILL_ON in (state.source, state.name):
        os.kill(os.getpid(), signal.SIGKILL)


_KILL_ON = os.environ.get("HOTFOLDER_TEST_KILL_ON")
