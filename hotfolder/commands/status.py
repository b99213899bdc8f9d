"""`hotfolder status`: counts, jobs in flight and servers, as text or as JSON (the document
the status page shows), read from the folders and the daemon's live status files."""

from __future__ import annotations

import json
from typing import Any, TextIO

from hotfolder.config.model import Config
from hotfolder.daemon.status import collect
from hotfolder.invocation import command


def run_status(config: Config, *, as_json: bool, out: TextIO) -> int:
    doc = collect(config)
    print(json.dumps(doc, indent=2) if as_json else format_text(doc, config), file=out)
    return 0


def format_text(doc: dict[str, Any], config: Config | None = None) -> str:
    lines = []
    daemon = doc["daemon"]
    if daemon.get("running"):
        lines.append(f"daemon: running (pid {daemon.get('pid')} on {daemon.get('host')})")
    else:
        stopped = (f"stopped at {daemon['stopped_at']} on {daemon.get('host')}"
                   if daemon.get("stopped_at") else "no fresh status from it")
        lines.append(f"daemon: not running ({stopped})")
        if config is not None and config.path is not None:
            lines.append(f"  start it with:  {command('run', '--config', config.path)}")
    for folder in doc["folders"]:
        c = folder["counts"]
        ignored = folder.get("ignored_total", 0)
        lines.append(f"folder {folder['name']} ({folder['root']}): {c['waiting']} waiting, "
                     f"{c['running']} running, {c['done']} done, {c['failed']} failed"
                     + (f", {ignored} ignored" if ignored else ""))
        for job in folder["jobs"]:
            progress = job.get("progress")
            step = f"step {progress['step']}/{progress['steps']}" if progress else job["phase"]
            loads = " (loading models)" if job.get("model_switch") else ""
            lines.append(f"  {job['job']}: {step} on {job.get('server') or '-'}{loads}, prompt "
                         f"{job.get('prompt_id') or '-'}, {job['age_seconds']:.0f} s old")
        for held in folder.get("being_written", []):
            who = ", ".join(f"pid {w['pid']} ({w['process']})" for w in held.get("writers", []))
            lines.append(f"  {held['file']}: being written for {held['seconds']:.0f} s"
                         + (f" by {who}" if who else "") + "; taken once its writer closes it")
        for item in folder.get("ignored", []):
            lines.append(f"  ignored {item['file']}: {item['reason']}")
        if ignored > len(folder.get("ignored", [])):
            lines.append(f"  … and {ignored - len(folder['ignored'])} more ignored")
    for server in doc["servers"]:
        state = {True: "up", False: "down", None: "unknown"}[server.get("up")]
        queued = server.get("queue_remaining")
        extra = f", {queued} queued" if isinstance(queued, int) else ""
        error = f" ({server['last_error']})" if server.get("last_error") else ""
        models = server.get("models")
        if models is not None:
            extra += f", models {', '.join(models) or 'none'}"
        if server.get("model_switches"):
            extra += f", {server['model_switches']} model switches"
        lines.append(f"server {server['name']} {server['url']}: {state}{extra}{error}")
    return "\n".join(lines)
