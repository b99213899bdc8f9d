"""Bring a finished prompt's files into the outbox, named after the job, never half-written.

Every output entry of `type: output` under every key of every output node is fetched (images,
gifs, videos, audio, …); `temp` outputs (PreviewImage) only when the folder asks for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import structlog

from hotfolder.comfy.client import ComfyClient
from hotfolder.errors import JobError
from hotfolder.job.naming import reserve_stem
from hotfolder.job.state import JobState
from hotfolder.outdir import OutDir

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


def check_output_names(outputs: list[dict[str, Any]]) -> None:
    """Refuse server-reported names that could point anywhere but ComfyUI's own folders."""
    for output in outputs:
        for key in ("filename", "subfolder"):
            value = str(output.get(key, ""))
            parts = re.split(r"[\\/]", value)
            if "\x00" in value or value.startswith(("/", "\\")) or ".." in parts \
                    or re.match(r"^[A-Za-z]:", value):
                raise JobError(f"ComfyUI reported an output with an unsafe {key} {value!r} "
                               "(a '..', an absolute path or a NUL); refused", kind="download")


def deliver_all(client: ComfyClient, outputs: list[dict[str, Any]], outdir: OutDir,
                state: JobState, save: Callable[[], None],
                file_mode: int | None = None, max_bytes: int | None = None,
                max_total: int | None = None, cancelled: Callable[[], bool] | None = None,
                ) -> list[dict[str, Any]]:
    """Download every output as `<stem>_00001.ext`, …, skipping those already delivered.

    The stem is chosen once and the state saved after each file, so a retry after a broken
    download (or a restart) completes the set instead of starting a second one. A file that
    already has its final name belongs to this job (the stem is reserved for it): it was placed
    just before a crash, so it is kept, not fetched again.
    """
    check_output_names(outputs)
    names = [f"_{i:05d}{_extension(o['filename'])}" for i, o in enumerate(outputs, start=1)]
    stem = reserve_stem(outdir, state, names)
    save()
    files = []
    total = sum(int(f.get("bytes") or 0) for f in state.delivered.values())
    for output, suffix in zip(outputs, names, strict=True):
        key = f"{output['node']}/{output.get('subfolder', '')}/{output['filename']}"
        if key not in state.delivered:
            name = f"{stem}{suffix}"
            size = outdir.plain_size(name)
            if size is None:
                room = None if max_total is None else max_total - total
                limit = room if max_bytes is None or (room is not None and room < max_bytes) \
                    else max_bytes
                if limit is not None and limit <= 0:
                    _too_much(max_total)
                with outdir.writer(name) as (fh, placed):
                    try:
                        size = client.download(output, fh, limit, cancelled=cancelled)
                    except JobError:
                        if limit != max_bytes:
                            _too_much(max_total)
                        raise
                name = placed[0]
                outdir.chmod(name, file_mode)
            state.delivered[key] = {
                "file": name, "bytes": size, "node": output["node"],
                "kind": output["kind"], "server_filename": output["filename"],
                "subfolder": output.get("subfolder", ""), "type": output.get("type", "output")}
            save()
            log.debug("job.output_saved", file=name, bytes=size)
            total += size
        files.append(state.delivered[key])
    return files


def _too_much(max_total: int | None) -> None:
    raise JobError(f"the job's outputs together are larger than comfy.max_job_output_bytes "
                   f"({max_total} bytes); the rest was not downloaded", kind="download")


def _extension(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        raise JobError(f"ComfyUI reported an output with an unusable name {filename!r}",
                       kind="download")
    return suffix
