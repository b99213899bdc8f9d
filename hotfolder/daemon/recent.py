"""The latest finished and failed jobs of a folder, read from what they left on disk.

A single job leaves a sidecar in the outbox (`fox.json`); a batch leaves a folder there
(`grid/`) with a `manifest.json`; a failure leaves an error file in failed/. Everything read here
can be written by someone else (the outbox and failed/ are shared folders), so files are opened
without following links and read only up to MAX_JSON_BYTES, and the folders are only listed for
the few newest entries.
"""

from __future__ import annotations

import heapq
import json
import os
import stat
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from hotfolder.config.model import FolderConfig
from hotfolder.job.naming import error_name_for

MANIFEST = "manifest.json"  # a batch's, in its folder in the outbox (job/batchrun.py)
MAX_JSON_BYTES = 16 * 1024**2  # a sidecar or manifest bigger than this is not shown


def recent_done(folder: FolderConfig, limit: int) -> list[dict[str, Any]]:
    """The latest jobs done, newest first: single jobs from their sidecars, batches from their
    manifests, each batch with its run counts and its folder (relative to the outbox)."""
    sidecars = _newest(folder.outbox, limit * 2, lambda e: e.name.endswith(".json")
                       and e.is_file(follow_symlinks=False))
    batches = _newest(folder.outbox, limit * 2, lambda e: e.is_dir(follow_symlinks=False))
    folders = {path for _, path in batches}
    found = []
    for mtime, path in sorted(sidecars + batches, reverse=True):
        item = _done_batch(path) if path in folders else _done_single(path, mtime)
        if item is not None:
            found.append(item)
        if len(found) == limit:
            break
    return found


def _done_single(path: Path, mtime: float) -> dict[str, Any] | None:
    sidecar = read_json(path)
    if not isinstance(sidecar, dict) or sidecar.get("status") != "done" \
            or not isinstance(sidecar.get("outputs"), list):
        return None  # some other JSON file in the outbox (an output, or a user's)
    timings = sidecar.get("timings")
    timings = timings if isinstance(timings, dict) else {}
    return {"job": sidecar.get("job"), "sidecar": path.name, "server": sidecar.get("server"),
            "model_switch": sidecar.get("model_switch"),
            "prompt": sidecar.get("prompt"), "finished_at": iso(mtime),
            "seconds": timings.get("total_seconds"), "batch": None,
            "outputs": [o["file"] for o in sidecar["outputs"]
                        if isinstance(o, dict) and isinstance(o.get("file"), str)]}


def _done_batch(directory: Path) -> dict[str, Any] | None:
    found = batch_summary(directory)
    if found is None or found[1]["status"] not in ("done", "partly done"):
        return None  # a folder of the user's, or a batch that went to failed/
    mtime, batch = found
    return {"job": batch.pop("job"), "sidecar": f"{directory.name}/{MANIFEST}", "server": None,
            "prompt": None, "finished_at": iso(mtime), "seconds": None, "batch": batch,
            "outputs": []}


def batch_summary(directory: Path) -> tuple[float, dict[str, Any]] | None:
    """(when its manifest was written, what status shows of it) for a batch's folder in the
    outbox, or None when there is no manifest there that a batch wrote."""
    path = directory / MANIFEST
    manifest = read_json(path)
    counts = [manifest.get(k) for k in ("runs_total", "runs_done", "runs_failed")] \
        if isinstance(manifest, dict) else []
    if not counts or not all(isinstance(n, int) for n in counts) \
            or not isinstance(manifest.get("status"), str):
        return None
    try:
        mtime = path.stat(follow_symlinks=False).st_mtime
    except OSError:
        return None
    total, done, failed = counts
    runs = manifest.get("runs")
    outputs = sum(len(r["outputs"]) for r in runs if isinstance(r, dict)
                  and isinstance(r.get("outputs"), list)) if isinstance(runs, list) else 0
    return mtime, {"job": manifest.get("job"), "dir": directory.name,
                   "status": manifest["status"], "runs_total": total, "runs_done": done,
                   "runs_failed": failed, "outputs": outputs}


def recent_failed(folder: FolderConfig, limit: int) -> list[dict[str, Any]]:
    """The latest failures, newest first, each with its job file in failed/ (None when the
    job's file is gone, e.g. cancelled by deleting it). A job file that is itself named like an
    error file (`x.error.json`) is not taken for one: a report has an `error`. A failed or
    cancelled batch comes with its run counts and its folder in the outbox."""
    reports = []
    for mtime, path in _newest(folder.failed, limit * 2, lambda e: e.name.endswith(
            ".error.json") and e.is_file(follow_symlinks=False)):
        report = read_json(path)
        if isinstance(report, dict) and isinstance(report.get("error"), str):
            reports.append((mtime, path, report))
        if len(reports) == limit:
            break
    names = {path.name for _, path, _ in reports}
    job_files: dict[str, str] = {}
    try:
        for entry in os.scandir(folder.failed):
            if entry.name not in names and Path(entry.name).suffix.lower() in folder.extensions \
                    and entry.is_file(follow_symlinks=False):  # not an image it took along
                job_files.setdefault(error_name_for(entry.name), entry.name)
    except OSError:
        pass
    return [{"job": report.get("job"), "error": report.get("error"), "kind": report.get("kind"),
             "error_file": path.name, "file": job_files.get(path.name),
             "failed_at": report.get("failed_at") or iso(mtime),
             "batch": _failed_batch(folder, report)}
            for mtime, path, report in reports]


def _failed_batch(folder: FolderConfig, report: dict[str, Any]) -> dict[str, Any] | None:
    """The batch a failure report is about, read from its own folder in this outbox: the
    report names its manifest, but only the folder's name is taken from it (a report in a
    shared failed/ could name any file)."""
    details = report.get("details")
    manifest = details.get("manifest") if isinstance(details, dict) else None
    if not isinstance(manifest, str):
        return None
    name = Path(manifest).parent.name
    if not name or name.startswith(".") or Path(manifest).name != MANIFEST:
        return None
    found = batch_summary(folder.outbox / name)
    if found is None:
        return None
    found[1].pop("job")
    return found[1]


def _newest(directory: Path, limit: int, keep: Any) -> list[tuple[float, Path]]:
    """The `limit` newest visible entries in `directory` that `keep` (given the DirEntry)."""
    def entries() -> Iterable[tuple[float, str]]:
        for e in os.scandir(directory):
            try:
                if not e.name.startswith(".") and keep(e):
                    yield e.stat(follow_symlinks=False).st_mtime, e.name
            except OSError:
                continue  # removed while we looked

    try:
        return [(mtime, directory / name) for mtime, name in heapq.nlargest(limit, entries())]
    except OSError:
        return []


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file, never through a link and never more than `limit` bytes (None if not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # a FIFO or a device: never read
            data = f.read(limit + 1)
        except OSError:
            return None
    if len(data) > limit:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="milliseconds")
