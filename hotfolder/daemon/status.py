"""What is going on, as one document: per-folder counts, jobs in flight, server states.

The daemon writes its live part (jobs, servers) next to each folder's jobs, in
`processing/.hotfolder-status.json`, about once a second; `hotfolder status` adds the counts,
the inbox files that are not jobs (job/inboxfiles.py) and the latest finished and failed jobs
(recent.py), read from the folders themselves. That works
across users and without any port, and with the daemon stopped it still tells what is on disk.
The status page serves the same document, with the live part taken from the daemon's memory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hotfolder.comfy.client import ComfyClient
from hotfolder.config.model import Config, FolderConfig
from hotfolder.config.servers import ServerConfig
from hotfolder.credentials import redact
from hotfolder.daemon.recent import iso, recent_done, recent_failed
from hotfolder.fsutil import pid_alive
from hotfolder.job.inboxfiles import survey
from hotfolder.job.state import HOST

STATUS_FILE = ".hotfolder-status.json"
FRESH_SECONDS = 15.0


def status_path(folder: FolderConfig) -> Path:
    return folder.processing / STATUS_FILE


def folder_counts(folder: FolderConfig) -> dict[str, int]:
    """Counted from the folders themselves (done/ and failed/ are listed, never read). What
    waits is what the watcher would take (inboxfiles.py decides), so neither a `notes.md`
    nor a link counts."""

    def count(directory: Path, keep: Any) -> int:
        try:
            return sum(1 for e in os.scandir(directory) if not e.name.startswith(".")
                       and (e.is_dir(follow_symlinks=False)  # a job folder
                            or (e.is_file(follow_symlinks=False) and keep(e.name))))
        except OSError:
            return 0

    def is_job(name: str) -> bool:  # images a job took along are not jobs of their own
        return Path(name).suffix.lower() in folder.extensions

    return {
        "waiting": survey(folder).waiting,
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


def collect(config: Config, *, probe: bool = True,
            live: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status document of `hotfolder status --json` and of the status page.

    `live` (by folder name) replaces what the daemon wrote to disk: the daemon itself passes
    its own state, fresher than the file."""
    now = time.time()
    folders, servers, daemon = [], None, None
    last_stop: dict[str, Any] | None = None
    for folder in config.folders:
        live_doc = live.get(folder.name) if live is not None else _read_live(folder)
        fresh = live_doc is not None and _running(live_doc, now)
        if fresh and live_doc is not None:
            servers = servers or live_doc.get("servers")
            daemon = daemon or {"running": True, "pid": live_doc.get("pid"),
                                "host": live_doc.get("host"),
                                "age_seconds": round(now - live_doc["updated_at"], 1)}
        elif live_doc is not None and isinstance(live_doc.get("stopped_at"), (int, float)):
            stopped = live_doc["stopped_at"]
            if stopped > (last_stop or {}).get("at", 0):
                last_stop = {"at": stopped, "host": live_doc.get("host")}
        inbox = survey(folder)
        folders.append({"name": folder.name, "root": str(folder.root),
                        "outbox": str(folder.outbox),
                        "counts": folder_counts(folder),
                        "jobs": live_doc.get("jobs", []) if fresh and live_doc else [],
                        "being_written": _being_written(live_doc, now) if fresh else [],
                        "ignored": inbox.ignored, "ignored_total": inbox.ignored_total,
                        "recent_done": recent_done(folder, config.http.recent),
                        "recent_failed": recent_failed(folder, config.http.recent)})
    if servers is None:
        servers = [_probe(s, config.comfy.request_timeout) if probe
                   else {"name": s.name, "url": s.url, "up": None} for s in config.servers]
    if daemon is None:
        daemon = {"running": False}
        if last_stop is not None:
            daemon.update(stopped_at=iso(last_stop["at"]), host=last_stop["host"])
    return redact({"daemon": daemon, "folders": folders, "servers": servers})


def _running(live: Mapping[str, Any], now: float) -> bool:
    """Whether the daemon that wrote `live` still runs: it wrote lately, did not say it
    stopped, and, when it ran on this machine, its process is still there (killed, it could
    not say so)."""
    try:
        updated = float(live.get("updated_at", 0))
    except (TypeError, ValueError):
        return False
    if now - updated >= FRESH_SECONDS or live.get("stopped_at") is not None:
        return False
    pid = live.get("pid")
    return not (live.get("node") == HOST and isinstance(pid, int) and not pid_alive(pid))


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
