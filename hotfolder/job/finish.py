"""The last step of every job: the sidecar and done/, or the error file and failed/.

A job file leaves processing/ only here, so each one ends in exactly one of done/ or failed/;
the images it took from the inbox follow it. Its webhook events are queued (events.py) before
it moves, so a job seen finished has its events on disk.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from hotfolder import crashpoints
from hotfolder.config.model import FolderConfig
from hotfolder.config.webhooks import WebhookConfig
from hotfolder.credentials import redact
from hotfolder.errors import JobError
from hotfolder.fsutil import apply_mode, candidates, write_json
from hotfolder.job import events
from hotfolder.job.companions import finishing, sidecar_inputs, take_along
from hotfolder.job.naming import error_name_for, release_stem
from hotfolder.job.state import JobState, Outcome, Record
from hotfolder.moves import move, pending

log = structlog.get_logger()


def iso_time(stamp: float | None) -> str | None:
    """Local time with its offset, to the millisecond: readable, and unambiguous in a log."""
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="milliseconds")


def timings(state: JobState, completed_at: float) -> dict[str, Any]:
    """The sidecar's `timings`: when the job was seen, claimed, submitted, done, delivered."""
    now = time.time()
    first = state.detected_at or state.claimed_at
    return {
        "detected_at": iso_time(state.detected_at), "claimed_at": iso_time(state.claimed_at),
        "submitted_at": iso_time(state.submitted_at), "completed_at": iso_time(completed_at),
        "delivered_at": iso_time(now),
        "run_seconds": round(completed_at - (state.submitted_at or completed_at), 3),
        "deliver_seconds": round(now - completed_at, 3),
        "total_seconds": round(now - first, 3),
    }


def finish_done(folder: FolderConfig, state: JobState, record: Record,
                files: list[dict[str, Any]], hooks: Sequence[WebhookConfig] = ()) -> Outcome:
    assert state.out_stem is not None
    sidecar = {**record.as_dict(), **sidecar_inputs(state), "status": "done", "outputs": files}
    # the stem is this job's (reserved): rewriting it after a crash is not a clash
    sidecar_path = write_json(folder.outbox / f"{state.out_stem}.json", sidecar, replace=True)
    apply_mode(sidecar_path, folder.file_mode)
    events.record(folder, hooks, "job.done", state.job_id, {
        "job": record.job, "folder": folder.name, "status": "done",
        **events.outputs(folder.outbox, (folder.outbox / f["file"] for f in files)),
        "sidecar_path": sidecar_path.name, "sidecar": sidecar})
    crashpoints.reached("queued", state.source, state.name)
    finishing(folder, state, "done")
    job_file = _file_away(folder, state, folder.done)
    take_along(folder, state, folder.done)  # images the job took from the inbox
    release_stem(folder.outbox, state)
    state.drop(folder)
    outputs = [folder.outbox / f["file"] for f in files]
    log.info("job.finished", outcome="done", prompt_id=record.prompt_id,
             server=record.server, outputs=[p.name for p in outputs],
             sidecar=sidecar_path.name, seconds=(record.timings or {}).get("total_seconds"))
    return Outcome("done", job_file=job_file, outputs=outputs)


def supersede_outputs(folder: FolderConfig, state: JobState) -> list[str]:
    """Take back the outputs of a run made on content that changed before the job ended: they
    are not what the job file now asks for, and a rerun is coming (the same names)."""
    removed = []
    for item in state.delivered.values():
        name = item.get("file")
        if isinstance(name, str) and name and "/" not in name and not name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder.outbox / name)
                removed.append(name)
    state.delivered, state.expected = {}, None
    return removed


def finish_batch(folder: FolderConfig, state: JobState, record: Record,
                 outputs: list[Path], *, runs: int, failed: int,
                 hooks: Sequence[WebhookConfig] = (),
                 batch: Mapping[str, Any] | None = None) -> Outcome:
    """A batch with at least one good run: its manifest is written; the job goes to done/.
    `batch`: what its webhook event says of the runs (events.batch_data)."""
    events.record(folder, hooks, "job.done", state.job_id,
                  {"job": record.job, "folder": folder.name, **(batch or {})})
    finishing(folder, state, "done")
    job_file = _file_away(folder, state, folder.done)
    take_along(folder, state, folder.done)  # images the job took from the inbox
    state.drop(folder)
    log.info("job.finished", outcome="done", runs=runs, runs_failed=failed,
             outputs=len(outputs), manifest=record.manifest)
    return Outcome("done", job_file=job_file, outputs=outputs)


def finish_failed(folder: FolderConfig, state: JobState, error: JobError,
                  record: Record, hooks: Sequence[WebhookConfig] = (),
                  batch: Mapping[str, Any] | None = None) -> Outcome:
    report = {
        "job": record.job,
        "error": error.message,
        "kind": error.kind,
        "folder": folder.name,
        "workflow": record.workflow,
        "server": state.server,
        "prompt_id": state.prompt_id,
        "failed_at": iso_time(time.time()),
        "details": error.details,
        **sidecar_inputs(state),
        **({"job_file": record.job_file} if record.job_file else {}),
    }
    events.record(folder, hooks, "job.failed", state.job_id, {
        "job": record.job, "folder": folder.name, "status": "failed", "kind": error.kind,
        "outputs": [], **(batch or {}), "error": redact(report)})
    job_file, error_path = _fail_files(folder, folder.processing / state.name,
                                       state.source or state.name, report)
    take_along(folder, state, folder.failed)  # images the job took from the inbox
    release_stem(folder.outbox, state)
    state.drop(folder)
    log.warning("job.failed", outcome="failed", kind=error.kind, reason=error.message,
                prompt_id=state.prompt_id, error_file=error_path.name)
    return Outcome("failed", job_file=job_file, error=error.message, kind=error.kind)


def _file_away(folder: FolderConfig, state: JobState, dest: Path) -> Path:
    """Move the job file out of processing/; its mtime becomes the finish time (for pruning)."""
    final = move(folder.processing / state.name, dest, state.source or state.name)
    apply_mode(final, folder.file_mode, touch=True)
    return final


def _fail_files(folder: FolderConfig, source: Path, name: str,
                report: Mapping[str, Any]) -> tuple[Path | None, Path]:
    """Error file first, then the job beside it: whoever sees the job in failed/ sees why.

    Both get one free stem (`fox.txt` + `fox.error.json`, or `fox-2.…`). A job whose file is
    gone (cancelled by deleting it) leaves just the error file.
    """
    resumed = pending(source, folder.failed)  # moved there before a crash, not yet removed
    error_name = error_name_for(resumed) if resumed else name
    for candidate in [] if resumed else candidates(name):
        error_name = error_name_for(candidate)
        if not (folder.failed / candidate).exists() \
                and not (folder.failed / error_name).exists():
            name = candidate
            break
    error_path = write_json(folder.failed / error_name, redact(report),
                            replace=resumed is not None)
    apply_mode(error_path, folder.file_mode)
    if not source.exists():
        return None, error_path
    job_file = move(source, folder.failed, name)
    apply_mode(job_file, folder.file_mode, touch=True)
    return job_file, error_path


def fail_unclaimed(folder: FolderConfig, path: Path, error: JobError) -> Path | None:
    """Fail a job that never left the inbox (cancelled before it started)."""
    report = {"job": path.name, "error": error.message, "kind": error.kind,
              "folder": folder.name, "failed_at": iso_time(time.time()),
              "details": error.details}
    try:
        job_file, _ = _fail_files(folder, path, path.name, report)
    except FileNotFoundError:
        return None  # claimed or removed meanwhile
    log.warning("job.failed", job=path.name, folder=folder.name, outcome="failed",
                kind=error.kind, reason=error.message)
    return job_file
