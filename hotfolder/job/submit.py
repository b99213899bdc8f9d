"""Submit a prepared workflow to a server and follow it until ComfyUI has its history entry.

Completion comes from the server's WebSocket (the listener wakes the job the moment its prompt
finishes); `/history` and `/queue` (or the jobs API) are polled as a fallback, rarely while
the socket is live.

A job runs once on the GPU: ComfyUI does not refuse a prompt_id it has seen (a second POST
runs the graph again), and a submission whose answer is lost (a 5xx, a time-out, a connection
dropped after sending) may have been queued all the same. Such a submission is "unconfirmed":
its prompt_id is looked up on the server, given a bounded time to appear, and followed if it
is there; the job is submitted again only once the prompt is known not to be.
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

from hotfolder.comfy.explain import explain_rejection, node_info_disagrees, node_info_wanted
from hotfolder.comfy.pool import Reservation, Server
from hotfolder.config.model import ComfyConfig, FolderConfig
from hotfolder.errors import Failover, JobError, Kind, PromptLost, ServerError, Stopping
from hotfolder.job.context import Context
from hotfolder.job.images import upload as upload_images
from hotfolder.job.intake import verify_unchanged
from hotfolder.job.state import JobState, Record
from hotfolder.retry import Backoff, Retry
from hotfolder.workflow.models import models_of

log = structlog.get_logger()

HISTORY_LAG_TRIES = 40  # `execution_success` arrives before the history entry is written


def execute(ctx: Context, folder: FolderConfig, state: JobState, workflow: dict[str, Any],
            record: Record, slot: Reservation | None = None) -> tuple[dict[str, Any], Server]:
    """Run the workflow on a server (submitting it, or following it where a previous life of
    the daemon submitted it) and return its history entry and the server. `slot`: the server
    the scheduler chose for it, a slot there already taken."""
    comfy = ctx.config.comfy
    limit = folder.job_timeout or comfy.job_timeout
    retry = comfy.backoff.start()
    server: Server | None = slot.take() if slot is not None else None
    unconfirmed: ServerError | None = None  # the last submission's lost answer
    appear_by = None
    if state.phase in ("submitting", "unconfirmed") and state.submitted_at:
        # submitted by a previous life moments ago: it may still be on its way into the queue
        left = _appear_seconds(comfy) - (time.time() - state.submitted_at)
        appear_by = time.monotonic() + left if left > 0 else None
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
                    entry = follow(ctx, known, state, workflow, limit, folder.server_tags,
                                   appear_by=appear_by)
                except PromptLost:
                    appear_by = None
                    state.prompt_id = None
                    if unconfirmed is not None:  # it never got into the queue: a real failure
                        log.info("job.submit_not_queued", server=known.name,
                                 action="submitting again")
                        exc, unconfirmed = unconfirmed, None
                        _after_submit_error(ctx, known, exc, retry)
                        if server is not None and not server.up:
                            ctx.pool.release(server)
                            server = None
                        continue
                    log.warning("job.lost_by_server", server=known.name,
                                action="the server forgot the prompt (restart?); resubmitting")
                    continue
                except Failover:
                    log.warning("job.moved", server=known.name, prompt_id=state.prompt_id,
                                action="server unreachable; resubmitting on another server")
                    state.prompt_id, unconfirmed, appear_by = None, None, None
                    if server is not None:
                        ctx.pool.release(server)
                        server = None
                    continue
                record.server, record.prompt_id = known.name, state.prompt_id
                record.models, record.model_switch = state.models, state.model_switch
                return entry, known
            if server is None:
                server = ctx.pool.acquire(folder.server_tags, models_of(workflow))
                if server is None:
                    raise Stopping
                continue  # the wait for a slot may have been long: check cancel again
            if state.submissions == 0:
                verify_unchanged(folder, state)  # the file may have changed while it waited
            try:
                submit(ctx, server, state, workflow)
            except ServerError as exc:
                if state.prompt_id is not None:  # unconfirmed: follow() looks it up first
                    unconfirmed = exc
                    appear_by = time.monotonic() + _appear_seconds(comfy, exc)
                    continue
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
    front = ctx.pool.queueing(server, prompt_id, state.priority)
    # record the id before the POST: after a crash the job is found again by it
    state.server, state.prompt_id, state.client_id = server.name, prompt_id, watch.client_id
    state.phase, state.submitted_at = "submitting", time.time()
    state.submissions += 1
    state.save(folder)
    try:
        server.client.submit(workflow, prompt_id=prompt_id, client_id=watch.client_id,
                             front=front)
    except ServerError as exc:
        if not exc.uncertain:
            _not_submitted(ctx, server, state, prompt_id, folder)
            raise
        # the server may have queued it: keep the id (and the watch), look it up first
        state.phase = "unconfirmed"
        state.save(folder)
        log.warning("job.submit_unconfirmed", server=server.name, prompt_id=prompt_id,
                    error=exc.message, action="looking the prompt up before submitting again")
        raise
    except JobError as exc:
        _not_submitted(ctx, server, state, prompt_id, folder)
        if exc.details.get("partial_prompt_id"):
            # ComfyUI queued the valid part of the graph anyway; the job failed, so stop it
            ctx.abandon(server, str(exc.details["partial_prompt_id"]))
        reworded = with_node_info(ctx, server, workflow, exc)
        if reworded is exc:
            raise
        raise reworded from exc
    ctx.pool.mark_up(server)
    models = models_of(workflow)
    state.models, state.model_switch = sorted(models), ctx.pool.queued(server, models)
    # not saved: after a crash, "submitting" and "submitted" are resumed alike (the
    # prompt id is looked up on the server), so the record needs no second write
    state.phase = "submitted"
    log.info("job.submitted", server=server.name, prompt_id=prompt_id,
             submission=state.submissions, models=state.models,
             model_switch=state.model_switch, **({"front": True} if front else {}))


def with_node_info(ctx: Context, server: Server, workflow: Mapping[str, Any],
                   exc: JobError) -> JobError:
    """A rejection worded again with the server's node definitions where they name the fix
    (the choices ComfyUI left out of a long list, the class meant by an unknown one). They
    are fetched once per server and cached; if they cannot be had, the wording stays as it
    was: the job fails for what the server said, not for what could not be looked up."""
    answer = exc.details.get("comfyui")
    wanted = node_info_wanted(answer) if exc.kind == Kind.REJECTED else None
    if wanted is None:
        return exc
    try:
        info = ctx.object_info.get(server.client, wanted, epoch=server.epoch,
                                   stale=lambda cached: node_info_disagrees(answer, cached))
    except ServerError as error:
        log.warning("job.node_info_unavailable", server=server.name, error=error.message,
                    action="the rejection is reported without the server's choices")
        return exc
    message, problems = explain_rejection(answer, workflow, object_info=info)
    return JobError(message, kind=exc.kind, details={**exc.details, "problems": problems})


def _not_submitted(ctx: Context, server: Server, state: JobState, prompt_id: str,
                   folder: FolderConfig) -> None:
    server.listener.forget(prompt_id)
    ctx.pool.forget_prompt(server, prompt_id)
    state.prompt_id = None
    state.phase = "claimed"
    state.save(folder)


def _appear_seconds(comfy: ComfyConfig, exc: ServerError | None = None) -> float:
    """How long an unconfirmed prompt is given to show up in the server's queue. ComfyUI's own
    500 comes after it has done with the request: what it queued is there at once. After a
    time-out, a lost connection or a proxy's 502/504 it may still be validating the prompt."""
    if exc is not None and exc.status == 500:
        return 1.0
    return max(5.0, comfy.request_timeout)


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
           limit: float, tags: tuple[str, ...] = (), *,
           appear_by: float | None = None) -> dict[str, Any]:
    """Wait for the prompt's history entry; raise PromptLost if the server does not have it
    (after `appear_by`, for a submission not confirmed yet), Failover if the server has been
    away too long while another one answers."""
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
            elif appear_by is not None:
                wait = min(wait, 0.25)  # unconfirmed: look again soon
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
                if appear_by is not None or not live or watch.finished or checks % 5 == 0:
                    where = client.where(prompt_id)
                    if where == "done":
                        entry = client.history(prompt_id)  # it has just finished
                        if entry is not None:
                            return entry
                    elif where == "unknown":
                        if appear_by is None or time.monotonic() >= appear_by:
                            raise PromptLost
                    elif appear_by is not None:
                        appear_by = None
                        _confirmed(ctx, server, state)
                away.reset()
            except ServerError as exc:
                ctx.pool.mark_down(server, exc)
                silent_for = time.monotonic() - (server.down_since or time.monotonic())
                if silent_for >= comfy.failover_seconds and ctx.pool.others_up(server, tags):
                    raise Failover from exc
                # the job time limit counts the server's time only
                waited = away.pause(ctx.stop)
                deadline += waited
                if appear_by is not None:
                    appear_by += waited  # nor does it count against an unconfirmed prompt
                continue
            if time.monotonic() > deadline:
                ctx.abandon(server, prompt_id)
                raise JobError(f"the job did not finish within {limit:g} seconds (the job "
                               "time limit); it was removed from ComfyUI's queue",
                               kind=Kind.TIMEOUT, details={"limit_seconds": limit})
    finally:
        listener.forget(prompt_id)
        ctx.pool.forget_prompt(server, prompt_id)


def _confirmed(ctx: Context, server: Server, state: JobState) -> None:
    """An unconfirmed submission turned out to be queued: it is followed, never resubmitted."""
    ctx.pool.mark_up(server)
    state.phase = "submitted"
    state.save(ctx.folder(state.folder))
    log.info("job.submit_confirmed", server=server.name, prompt_id=state.prompt_id,
             note="the server had queued it; it is not submitted again")
