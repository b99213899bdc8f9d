"""Bring a finished prompt's files into the outbox, named after the job, never half-written.

Every output entry of `type: output` under every key of every output node is fetched (images,
gifs, videos, audio, …); `temp` outputs (PreviewImage) only when the folder asks for them. A
server whose download breaks off (or crawls) is marked down and the job is parked, its worker
freed, to go on where it left off; a server never has more downloads going than slots.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import IO, Any

import structlog

from hotfolder import crashpoints
from hotfolder.comfy.client import ComfyClient
from hotfolder.comfy.failure import explain_history_failure
from hotfolder.comfy.pool import Server
from hotfolder.config.model import FolderConfig, OutputPolicy
from hotfolder.errors import JobError, Kind, Parked, ServerError
from hotfolder.job import convert_output as convert
from hotfolder.job.context import Context
from hotfolder.job.finish import timings
from hotfolder.job.naming import reserve_stem
from hotfolder.job.state import JobState, Record
from hotfolder.outdir import OutDir

log = structlog.get_logger()


def fetch(ctx: Context, folder: FolderConfig, state: JobState, entry: dict[str, Any],
          server: Server, workflow: Mapping[str, Any], record: Record,
          outbox: OutDir, *, park: bool = True) -> list[dict[str, Any]]:
    """The finished prompt's outputs, downloaded into `outbox` (or why there are none).

    `park`: a single job is parked when its server cannot deliver now (its worker is freed);
    a batch's run waits here instead, in the batch's own threads."""
    status = entry.get("status") if isinstance(entry.get("status"), Mapping) else {}
    if status.get("status_str") == "error":
        message, details = explain_history_failure(entry, workflow)
        raise JobError(message, kind=Kind.EXECUTION_ERROR, details=details)
    outputs = collect_outputs(entry, include_temp=folder.include_temp_outputs)
    if not outputs:
        raise JobError("the workflow produced no output: ComfyUI finished it but reported "
                       "no saved files (does it end in a SaveImage or another save node?)",
                       kind=Kind.NO_OUTPUT)
    completed_at = time.time()
    state.phase, state.expected = "delivering", len(outputs)  # saved by deliver_all
    log.info("job.completed", server=server.name, prompt_id=state.prompt_id,
             outputs=len(outputs))
    comfy = ctx.config.comfy
    if len(outputs) > comfy.max_outputs:
        raise JobError(f"the workflow produced {len(outputs)} output files; a job may have "
                       f"at most {comfy.max_outputs} (comfy.max_outputs)", kind=Kind.DOWNLOAD)
    files = _download_all(ctx, folder, state, server, outputs, outbox, park)
    if comfy.delete_history and state.prompt_id:
        try:
            server.client.delete_history(state.prompt_id)
        except ServerError as exc:
            log.warning("job.history_delete_failed", error=exc.message)
    record.timings = timings(state, completed_at)
    return files


def _download_all(ctx: Context, folder: FolderConfig, state: JobState, server: Server,
                  outputs: list[dict[str, Any]], outbox: OutDir,
                  park: bool) -> list[dict[str, Any]]:
    comfy = ctx.config.comfy
    while True:
        if not server.begin_download():
            if park:
                raise Parked(1.0, f"{server.name} has {server.limit} downloads going")
            ctx.wait(0.5)
            continue
        try:
            return deliver_all(server.client, outputs, outbox, state,
                               save=lambda: state.save(folder), file_mode=folder.file_mode,
                               max_bytes=comfy.max_output_bytes,
                               max_total=comfy.max_job_output_bytes,
                               cancelled=ctx.stop.is_set, policy=folder.output)
        except ServerError as exc:
            ctx.pool.mark_down(server, exc)
            state.life.download_tries += 1
            delay = comfy.backoff.delay(state.life.download_tries + 1)
            if park:
                raise Parked(delay, exc.message) from exc
            ctx.wait(delay)
        finally:
            server.end_download()


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
                               "(a '..', an absolute path or a NUL); refused", kind=Kind.DOWNLOAD)


def deliver_all(client: ComfyClient, outputs: list[dict[str, Any]], outdir: OutDir,
                state: JobState, save: Callable[[], None],
                file_mode: int | None = None, max_bytes: int | None = None,
                max_total: int | None = None, cancelled: Callable[[], bool] | None = None,
                policy: OutputPolicy | None = None) -> list[dict[str, Any]]:
    """Download every output as `<stem>_00001.ext`, …, skipping those already delivered.

    The stem is chosen once and the state saved after each file, so a retry after a broken
    download (or a restart) completes the set instead of starting a second one. A file that
    already has its final name belongs to this job (the stem is reserved for it): it was placed
    just before a crash, so it is kept, not fetched again. An output the folder's policy may
    rewrite can end up under either of two names (`.png` as written, `.jpg` converted): both
    are reserved, and either found counts as delivered.
    """
    policy = policy or OutputPolicy()
    check_output_names(outputs)
    suffixes = [_extension(o["filename"]) for o in outputs]
    names = [[f"_{i:05d}{s}" for s in dict.fromkeys((convert.target_suffix(policy, s), s)
                                                    if convert.applies(policy, s) else (s,))]
             for i, s in enumerate(suffixes, start=1)]
    stem = reserve_stem(outdir, state, [n for pair in names for n in pair])
    save()
    files = []
    total = sum(int(f.get("bytes") or 0) for f in state.delivered.values())
    for output, suffix, options in zip(outputs, suffixes, names, strict=True):
        key = f"{output['node']}/{output.get('subfolder', '')}/{output['filename']}"
        if key not in state.delivered:
            found = [(f"{stem}{o}", outdir.plain_size(f"{stem}{o}")) for o in options]
            name, size = next(((n, z) for n, z in found if z is not None), (None, None))
            extra = convert.found_record(policy, suffix, name) if name else {}
            if name is None or size is None:
                room = None if max_total is None else max_total - total
                limit = room if max_bytes is None or (room is not None and room < max_bytes) \
                    else max_bytes
                if limit is not None and limit <= 0:
                    _too_much(max_total)
                name, size, extra = _download(client, output, outdir, stem + options[-1],
                                              suffix, policy, limit, max_bytes, max_total,
                                              cancelled)
                outdir.chmod(name, file_mode)
                crashpoints.reached("delivered", name)
            state.delivered[key] = {
                "file": name, "bytes": size, "node": output["node"],
                "kind": output["kind"], "server_filename": output["filename"],
                "subfolder": output.get("subfolder", ""), "type": output.get("type", "output"),
                **extra}
            save()
            log.debug("job.output_saved", file=name, bytes=size, **extra)
            total += size
        files.append(state.delivered[key])
    return files


def _download(client: ComfyClient, output: dict[str, Any], outdir: OutDir, name: str,
              suffix: str, policy: OutputPolicy, limit: int | None, max_bytes: int | None,
              max_total: int | None, cancelled: Callable[[], bool] | None,
              ) -> tuple[str, int, dict[str, Any]]:
    """One output into the outbox under a free name: straight into its temp file, or (when the
    policy may rewrite it) into a scratch file first, converted into the temp file."""
    def fetch_into(fh: IO[bytes]) -> int:
        try:
            return client.download(output, fh, limit, cancelled=cancelled)
        except JobError:
            if limit != max_bytes:
                _too_much(max_total)
            raise

    if not convert.applies(policy, suffix):
        with outdir.writer(name) as (fh, placed):
            size = fetch_into(fh)
        return placed[0], size, convert.left_record(policy, suffix)
    with outdir.scratch(name) as raw:
        fetch_into(raw)
        raw.seek(0)
        plan = convert.plan(raw, policy, suffix, output["filename"])
        final = name[: -len(suffix)] + plan.suffix
        with outdir.writer(final) as (fh, placed):
            convert.apply(plan, raw, fh, policy, output["filename"])
            size = fh.tell()
            crashpoints.reached("converted", final)
    return placed[0], size, dict(plan.record)


def _too_much(max_total: int | None) -> None:
    raise JobError(f"the job's outputs together are larger than comfy.max_job_output_bytes "
                   f"({max_total} bytes); the rest was not downloaded", kind=Kind.DOWNLOAD)


def _extension(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        raise JobError(f"ComfyUI reported an output with an unusable name {filename!r}",
                       kind=Kind.DOWNLOAD)
    return suffix
