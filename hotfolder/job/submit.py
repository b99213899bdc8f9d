"""Submit a prepared workflow to a server and follow it until ComfyUI has its history entry.

Completion comes from the server's WebSocket (the listener wakes the job the moment its prompt
finishes); `/history` and `/queue` are polled as a fallback, rarely while the socket is live.
Server trouble never fails a job here: an unreachable server is waited for (and the job moves
to another server when one answers), a prompt the server forgot is submitted again; only a
bounded number of 5xx answers to the submission itself, and the job time limit, end a job.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from hotfolder.comfy.pool import Server
from hotfolder.config.model import FolderConfig
from hotfolder.errors import Failover, JobError, Kind, PromptLost, ServerError, Stopping
from hotfolder.job.context import Context
from hotfolder.job.images import upload as upload_images
from hotfolder.job.intake import verify_unchanged
from hotfolder.job.state import JobState, Record
from hotfolder.retry import Backoff, Retry

log = structlog.get_logger()

HISTORY_LAG_TRIES = 40  # `execution_success` arrives before the history entry is written


def execute(ctx: Context, folder: FolderConfig, state: JobState, workflow: dict[str, Any],
            record: Record) -> tuple[dict[str, Any], Server]:
    """Run the workflow on a server (submitting it, or following it where a previous life of
    the daemon submitted it) and return its history entry and the server."""
    limit = folder.job_timeout or ctx.config.comfy.job_timeout
    retry = ctx.config.comfy.backoff.start()
    server: Server | None = None
    try:
        while True:
            if ctx.stop.is_set():
                raise Stopping
            ctx.check_cancelled(folder, state)
            known = ctx.pool.by_name(state.server) if state.prompt_id else None
            if known is not None and server is None:
                server = ctx.pool.attach(known)  # resumed: it is in flight there already
            if known is not None and state.prompt_id:
                try:
                    entry = follow(ctx, known, state, workflow, limit, folder.server_tags)
                except PromptLost:
                    log.warning("job.lost_by_server", server=known.name,
                                prompt_id=state.prompt_id,
                                action="the server forgot the prompt (restart?); resubmitting")
                    state.prompt_id = None
                    continue
                except Failover:
                    log.warning("job.moved", server=known.name, prompt_id=state.prompt_id,
                                action="server unreachable; resubmitting on another server")
                    state.prompt_id = None
                    if server is not None:
                        ctx.pool.release(server)
                        server = None
                    continue
                record.server, record.prompt_id = known.name, state.prompt_id
                return entry, known
            if server is None:
                server = ctx.pool.acquire(folder.server_tags)
                if server is None:
                    raise Stopping
                continue  # the wait for a slot may have been long: check cancel again
            if state.submissions == 0:
                verify_unchanged(folder, state)  # the file may have changed while it waited
            try:
                submit(ctx, server, state, workflow)
            except ServerError as exc:
                _after_submit_error(ctx, server, exc, retry)
                if not server.up:
                    ctx.pool.release(server)
                    server = None
    finally:
        if server is not None:
            ctx.pool.release(server)


def submit(ctx: Context, server: Server, state: JobState, workflow: dict[str, Any]) -> None:
    if ctx.draining.is_set():
        raise Stopping  # shutting down: submit nothing new
    folder = ctx.folder(state.folder)
    with state.life.upload_lock:
        upload_images(server.client, server.name, state, workflow, state.life.images,
                      save=lambda: state.save(folder))
    prompt_id = str(uuid.uuid4())
    watch = server.listener.watch(prompt_id, job=state.source, folder=state.folder)
    # record the id before the POST: after a crash the job is found again by it
    state.server, state.prompt_id, state.client_id = server.name, prompt_id, watch.client_id
    state.phase, state.submitted_at = "submitting", time.time()
    state.submissions += 1
    state.save(folder)
    try:
        server.client.submit(workflow, prompt_id=prompt_id, client_id=watch.client_id)
    except (ServerError, JobError) as exc:
        server.listener.forget(prompt_id)
        state.prompt_id = None
        state.phase = "claimed"
        state.save(folder)
        if isinstance(exc, JobError) and exc.details.get("partial_prompt_id"):
            # ComfyUI queued the valid part of the graph anyway; the job failed, so stop it
            ctx.abandon(server, str(exc.details["partial_prompt_id"]))
        raise
    ctx.pool.mark_up(server)
    # not saved: after a crash, "submitting" and "submitted" are resumed alike (the
    # prompt id is looked up on the server), so the record needs no second write
    state.phase = "submitted"
    log.info("job.submitted", server=server.name, prompt_id=prompt_id,
             submission=state.submissions)


def _after_submit_error(ctx: Context, server: Server, exc: ServerError, retry: Retry) -> None:
    """A 5xx answer counts against `comfy.retries_5xx` and backs off; an unreachable server is
    marked down (its jobs wait for it, or go elsewhere) and tried again after the first delay."""
    comfy = ctx.config.comfy
    if exc.status is not None and exc.status >= 500:
        if retry.attempt >= comfy.retries_5xx:
            raise JobError(f"ComfyUI kept answering HTTP {exc.status} to this job "
                           f"({retry.attempt + 1} times); the server said: "
                           f"{exc.body.strip() or '(nothing)'}", kind=Kind.SERVER_ERROR,
                           details={"server": server.name, "status": exc.status,
                                    "body": exc.body}) from exc
        log.warning("job.submit_retry", server=server.name, status=exc.status,
                    attempt=retry.attempt + 1, limit=comfy.retries_5xx)
        retry.pause(ctx.stop)
    else:
        ctx.pool.mark_down(server, exc)
        ctx.wait(comfy.backoff.delay(1))


def follow(ctx: Context, server: Server, state: JobState, workflow: Mapping[str, Any],
           limit: float, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Wait for the prompt's history entry; raise PromptLost if the server forgot it, Failover
    if it has been away too long while another server answers."""
    assert state.prompt_id is not None
    prompt_id, comfy, client = state.prompt_id, ctx.config.comfy, server.client
    listener = server.listener
    watch = listener.watch(prompt_id, client_id=state.client_id, job=state.source,
                           folder=state.folder)
    deadline = time.monotonic() + limit
    lag_tries = checks = 0
    away = Backoff(comfy.poll_interval, max(comfy.poll_interval, 5.0)).start()
    try:
        while True:
            live = listener.live_for(watch)
            wait = max(5.0, comfy.poll_interval * 5) if live else comfy.poll_interval
            if watch.finished:
                wait = min(0.05 * (lag_tries + 1), comfy.poll_interval)
            watch.wake.wait(wait)
            watch.wake.clear()
            if ctx.stop.is_set():
                raise Stopping
            ctx.check_cancelled(ctx.folder(state.folder), state)
            told = watch.entry(workflow)
            if told is not None:
                ctx.pool.mark_up(server)
                return told
            try:
                entry = client.history(prompt_id)
                if entry is not None:
                    ctx.pool.mark_up(server)
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
                    raise PromptLost
                away.reset()
            except ServerError as exc:
                ctx.pool.mark_down(server, exc)
                silent_for = time.monotonic() - (server.down_since or time.monotonic())
                if silent_for >= comfy.failover_seconds and ctx.pool.others_up(server, tags):
                    raise Failover from exc
                # the job time limit counts the server's time only
                deadline += away.pause(ctx.stop)
                continue
            if time.monotonic() > deadline:
                ctx.abandon(server, prompt_id)
                raise JobError(f"the job did not finish within {limit:g} seconds (the job "
                               "time limit); it was removed from ComfyUI's queue",
                               kind=Kind.TIMEOUT, details={"limit_seconds": limit})
    finally:
        listener.forget(prompt_id)
