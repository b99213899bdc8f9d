"""What is going on, as one document: per-folder counts, jobs in flight, server states.

The daemon writes its live part (jobs, servers) next to each folder's jobs, in
`processing/.hotfolder-status.json`, about once a second; `hotfolder status` adds the counts
and the latest finished and failed jobs it reads from the folders themselves. That works
across users and without any port, and with the daemon stopped it still tells what is on disk.
The status page serves the same document, with the live part taken from the daemon's memory.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from hotfolder.comfy.client import ComfyClient
from hotfolder.config.model import Config, FolderConfig
from hotfolder.config.servers import ServerConfig
from hotfolder.credentials import redact
from hotfolder.job.naming import error_name_for

STATUS_FILE = ".hotfolder-status.json"
FRESH_SECONDS = 15.0


def status_path(folder: FolderConfig) -> Path:
    return folder.processing / STATUS_FILE


def folder_counts(folder: FolderConfig) -> dict[str, int]:
    """Counted from the folders themselves (done/ and failed/ are listed, never read)."""

    def count(directory: Path, keep: Any) -> int:
        try:
            return sum(1 for e in os.scandir(directory) if not e.name.startswith(".")
                       and (e.is_dir(follow_symlinks=False)  # a job folder
                            or (e.is_file() and keep(e.name))))
        except OSError:
            return 0

    def is_job(name: str) -> bool:  # images a job took along are not jobs of their own
        return Path(name).suffix.lower() in folder.extensions

    return {
        "waiting": count(folder.inbox, is_job),
        "running": count(folder.processing, lambda n: True),
        "done": count(folder.done, is_job),
        "failed": count(folder.failed, lambda n: is_job(n) and not n.endswith(".error.json")),
    }


def _read_live(folder: FolderConfig) -> dict[str, Any] | None:
    try:
        data = json.loads(status_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recent_done(folder: FolderConfig, limit: int) -> list[dict[str, Any]]:
    """The latest jobs done, newest first, from their sidecars in the outbox."""
    found = []
    for mtime, path in _newest(folder.outbox, limit * 2, lambda n: n.endswith(".json")):
        sidecar = _read_json(path)
        if not isinstance(sidecar, dict) or sidecar.get("status") != "done" \
                or not isinstance(sidecar.get("outputs"), list):
            continue  # some other JSON file in the outbox (an output, or a user's)
        timings = sidecar.get("timings")
        timings = timings if isinstance(timings, dict) else {}
        found.append({
            "job": sidecar.get("job"), "sidecar": path.name, "server": sidecar.get("server"),
            "prompt": sidecar.get("prompt"), "finished_at": _iso(mtime),
            "seconds": timings.get("total_seconds"),
            "outputs": [o["file"] for o in sidecar["outputs"]
                        if isinstance(o, dict) and isinstance(o.get("file"), str)]})
        if len(found) == limit:
            break
    return found


def recent_failed(folder: FolderConfig, limit: int) -> list[dict[str, Any]]:
    """The latest failures, newest first, each with its job file in failed/ (None when the
    job's file is gone, e.g. cancelled by deleting it). A job file that is itself named like an
    error file (`x.error.json`) is not taken for one: a report has an `error`."""
    reports = []
    for mtime, path in _newest(folder.failed, limit * 2, lambda n: n.endswith(".error.json")):
        report = _read_json(path)
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
             "failed_at": report.get("failed_at") or _iso(mtime)}
            for mtime, path, report in reports]


def _newest(directory: Path, limit: int, keep: Any) -> list[tuple[float, Path]]:
    """The `limit` newest visible files in `directory` whose names pass `keep`."""
    def entries() -> Iterable[tuple[float, str]]:
        for e in os.scandir(directory):
            try:
                if not e.name.startswith(".") and keep(e.name) \
                        and e.is_file(follow_symlinks=False):
                    yield e.stat(follow_symlinks=False).st_mtime, e.name
            except OSError:
                continue  # removed while we looked

    try:
        return [(mtime, directory / name) for mtime, name in heapq.nlargest(limit, entries())]
    except OSError:
        return []


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="milliseconds")


def collect(config: Config, *, probe: bool = True,
            live: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status document of `hotfolder status --json` and of the status page.

    `live` (by folder name) replaces what the daemon wrote to disk: the daemon itself passes
    its own state, fresher than the file."""
    now = time.time()
    folders, servers, daemon = [], None, None
    for folder in config.folders:
        live_doc = live.get(folder.name) if live is not None else _read_live(folder)
        fresh = live_doc is not None \
            and now - float(live_doc.get("updated_at", 0)) < FRESH_SECONDS
        if fresh and live_doc is not None:
            servers = servers or live_doc.get("servers")
            daemon = daemon or {"running": True, "pid": live_doc.get("pid"),
                                "host": live_doc.get("host"),
                                "age_seconds": round(now - live_doc["updated_at"], 1)}
        folders.append({"name": folder.name, "root": str(folder.root),
                        "counts": folder_counts(folder),
                        "jobs": live_doc.get("jobs", []) if fresh and live_doc else [],
                        "being_written": _being_written(live_doc, now) if fresh else [],
                        "recent_done": recent_done(folder, config.http.recent),
                        "recent_failed": recent_failed(folder, config.http.recent)})
    if servers is None:
        servers = [_probe(s, config.comfy.request_timeout) if probe
                   else {"name": s.name, "url": s.url, "up": None} for s in config.servers]
    return redact({"daemon": daemon or {"running": False}, "folders": folders,
                   "servers": servers})


def _being_written(live: Mapping[str, Any] | None, now: float) -> list[dict[str, Any]]:
    """The inbox files held open for writing, their age brought up to now."""
    files = live.get("being_written") if live else None
    if not isinstance(files, list):
        return []
    return [{**f, "seconds": round(now - float(f.get("since", now)), 1)} for f in files
            if isinstance(f, dict)]


def _probe(server: ServerConfig, timeout: float) -> dict[str, Any]:
    name, url = server.name, server.url
    client = ComfyClient(url, name=name, timeout=min(timeout, 3.0), headers=server.headers,
                         verify=server.verify)
    try:
        remaining = client.queue_remaining()
    except Exception as exc:  # noqa: BLE001 - any failure means "down", said in last_error
        return {"name": name, "url": url, "up": False, "last_error": str(exc)}
    return {"name": name, "url": url, "up": True, "queue_remaining": remaining}


def status_line(counts: dict[str, int], servers: Iterable[dict[str, Any]]) -> str:
    """One line for systemd's STATUS= and the log: counts, then each server up or down."""
    parts = ", ".join(f"comfy@{s['name']} {'up' if s.get('up') else 'down'}" for s in servers)
    return (f"{counts.get('running', 0)} running, {counts.get('waiting', 0)} waiting, "
            f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed; {parts}")
