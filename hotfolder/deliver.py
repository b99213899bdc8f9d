"""Bring a finished prompt's files into the outbox, named after the job, never half-written.

Every output entry of `type: output` under every key of every output node is fetched (images,
gifs, videos, audio, …); `temp` outputs (PreviewImage) only when the folder asks for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from hotfolder.claim import JobState
from hotfolder.client import ComfyClient
from hotfolder.errors import JobError
from hotfolder.fsutil import atomic_writer, free_stem, write_json

log = structlog.get_logger()


def collect_outputs(entry: Mapping[str, Any], *, include_temp: bool) -> list[dict[str, Any]]:
    """The downloadable files of a history entry, in node order."""
    wanted = {"output", "temp"} if include_temp else {"output"}
    found: list[dict[str, Any]] = []
    outputs = entry.get("outputs")
    if not isinstance(outputs, Mapping):
        return found
    for node_id, node_out in outputs.items():
        if not isinstance(node_out, Mapping):
            continue
        for key, items in node_out.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if (isinstance(item, Mapping) and isinstance(item.get("filename"), str)
                        and item.get("type", "output") in wanted):
                    found.append({**item, "node": str(node_id), "kind": str(key)})
    return found


def job_stem(name: str) -> str:
    """The job file's name without its extension, as the outputs' base name."""
    stem = PurePosixPath(name).stem
    return stem or "job"


def safe_prefix_part(stem: str) -> str:
    """A piece of a ComfyUI filename_prefix: no separators, no dots, bounded length."""
    cleaned = re.sub(r"[^\w\-]+", "_", stem, flags=re.UNICODE).strip("_.")
    return (cleaned or "job")[:60]


def deliver_all(client: ComfyClient, outputs: list[dict[str, Any]], outbox: Path,
                state: JobState, save: Callable[[], None]) -> list[dict[str, Any]]:
    """Download every output as `<stem>_00001.ext`, …, skipping those already delivered.

    The stem is chosen once and the state saved after each file, so a retry after a broken
    download (or a restart) completes the set instead of starting a second one.
    """
    outbox.mkdir(parents=True, exist_ok=True)
    names = [f"_{i:05d}{_extension(o['filename'])}" for i, o in enumerate(outputs, start=1)]
    if state.out_stem is None:
        stem = job_stem(state.source or state.name)
        state.out_stem = free_stem(outbox, stem, [".json", *names])
        save()
    files = []
    for output, suffix in zip(outputs, names, strict=True):
        key = f"{output['node']}/{output.get('subfolder', '')}/{output['filename']}"
        if key not in state.delivered:
            with atomic_writer(outbox / f"{state.out_stem}{suffix}") as (fh, placed):
                size = client.download(output, fh)
            state.delivered[key] = {
                "file": placed[0].name, "bytes": size, "node": output["node"],
                "kind": output["kind"], "server_filename": output["filename"],
                "subfolder": output.get("subfolder", ""), "type": output.get("type", "output")}
            save()
            log.debug("job.output_saved", file=placed[0].name, bytes=size)
        files.append(state.delivered[key])
    return files


def write_sidecar(outbox: Path, stem: str, record: Mapping[str, Any]) -> Path:
    return write_json(outbox / f"{stem}.json", record)


def _extension(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        raise JobError(f"ComfyUI reported an output with an unusable name {filename!r}",
                       kind="download")
    return suffix
