"""Input images: which node takes each, and its upload to each server.

A job's images are checked before anything is sent (imagefiles.py), bound to the `image`
input of the workflow's LoadImage (or LoadImageMask) nodes, and uploaded once per server just
before the prompt is submitted there, under a name unique to the job. The names the server
gave back are kept in the job's state record, so a resumed job, or a second run of the same
job, uses them instead of uploading again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hotfolder.errors import JobError, Kind
from hotfolder.job.imagefiles import ImageInfo, check_image, mask_bytes, read_image, verify_bytes
from hotfolder.workflow.bindings import Target, bindings_for, resolve_node
from hotfolder.workflow.graph import is_link, node_label

if TYPE_CHECKING:
    from hotfolder.comfy.client import ComfyClient
    from hotfolder.job.state import JobState

log = structlog.get_logger()

UPLOAD_SUBFOLDER = "hotfolder"  # in ComfyUI's input folder

# field -> the loader class whose `image` input takes it when nothing else says
LOADERS = {"image": "LoadImage", "mask": "LoadImageMask"}


@dataclass
class Bound:
    """One file of the job and the inputs it goes to."""

    kind: str  # image | mask
    file: str  # the name it was dropped under
    path: Path  # where it is now
    targets: list[Target]
    upload_name: str  # unique to the job: "<job id>-<name>"
    channel: str | None = None  # for a mask: the channel its LoadImageMask reads
    info: ImageInfo | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.file}"


@dataclass
class JobImages:
    """What `bind` found for a job, kept for its submissions (not saved: found again on resume)."""

    bound: list[Bound] = field(default_factory=list)
    checked: dict[Path, tuple[tuple[int, int, int], ImageInfo]] = field(default_factory=dict)
    trusted: Path | None = None  # the daemon's folder the files are opened below
    max_bytes: int = 0


def bind(workflow: dict[str, Any], files: Mapping[str, tuple[str, Path]], *,
         overrides: Mapping[str, tuple[str, ...]], job_id: str, max_bytes: int,
         template_name: str, previous: JobImages | None = None,
         trusted: Path | None = None) -> JobImages:
    """Check each file and write its job-unique upload name into the inputs that take it.

    `files` maps what the job said (`image`, `mask`, or a node id, title or class) to the file
    (as dropped, and where it is now). The names written here are what the upload will ask
    for; `upload` corrects them if a server answers with another.
    """
    found = JobImages(checked=dict(previous.checked) if previous else {}, trusted=trusted,
                      max_bytes=max_bytes)
    by_key: dict[str, Bound] = {}
    taken_names: set[str] = set()
    for ref, (file_name, path) in files.items():
        kind, targets = _targets(workflow, ref, overrides, template_name, file_name)
        channel = None
        if kind == "mask":
            values = {workflow[nid]["inputs"].get("channel") for nid, _ in targets}
            channel = values.pop() if len(values) == 1 else None
            channel = channel if isinstance(channel, str) else None
        key = f"{kind}:{file_name}"
        if key in by_key:
            by_key[key].targets.extend(t for t in targets if t not in by_key[key].targets)
            continue
        upload = _upload_name(job_id, file_name, kind, taken_names,
                              png=kind == "mask" and channel == "alpha")
        by_key[key] = Bound(kind, file_name, path, list(targets), upload, channel)
    for item in by_key.values():
        item.info = _checked(found, item.path, item.file, max_bytes)
        for node_id, input_name in item.targets:
            workflow[node_id]["inputs"][input_name] = f"{UPLOAD_SUBFOLDER}/{item.upload_name}"
    found.bound = sorted(by_key.values(), key=lambda b: b.kind != "image")  # originals first
    return found


def _checked(found: JobImages, path: Path, name: str, max_bytes: int) -> ImageInfo:
    try:
        st = path.lstat()
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        signature = (-1, -1, -1)
    cached = found.checked.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    info = check_image(path, name=name, max_bytes=max_bytes, trusted=found.trusted)
    found.checked[path] = (signature, info)
    return info


def _read_checked(item: Bound, images: JobImages) -> bytes:
    """The file's bytes for its upload, read through one descriptor: if it is not the version
    that was checked when the job was prepared, these very bytes are checked again."""
    data, st = read_image(item.path, item.file, max_bytes=images.max_bytes or 2**63,
                          trusted=images.trusted)
    signature = (st.st_size, st.st_mtime_ns, st.st_ino)
    cached = images.checked.get(item.path)
    if cached is None or cached[0] != signature:
        item.info = verify_bytes(data, item.file)
        images.checked[item.path] = (signature, item.info)
        log.info("job.image_checked_again", file=item.file,
                 reason="it changed after the job was prepared")
    return data


def _targets(workflow: Mapping[str, Any], ref: str, overrides: Mapping[str, tuple[str, ...]],
             template_name: str, file_name: str) -> tuple[str, list[Target]]:
    if ref in LOADERS:
        found = bindings_for(workflow, {k: v for k, v in overrides.items() if k == ref})
        targets = found.get(ref) or []
        cls = LOADERS[ref]
        if not targets:
            raise JobError(f"the workflow {template_name!r} has no {cls} node to take {file_name}"
                           f" (or a bindings.{ref} in the config); name the node that should "
                           "take it in images:", kind=Kind.PATCH)
        if len(targets) > 1 and ref not in overrides:
            nodes = ", ".join(node_label(workflow, nid) for nid, _ in targets)
            raise JobError(f"the workflow {template_name!r} has {len(targets)} {cls} nodes "
                           f"({nodes}): name the one that takes {file_name} in images: (by id or "
                           f"title), or set workflows.{template_name}.bindings.{ref}",
                           kind=Kind.PATCH)
        return ref, targets
    node_id = resolve_node(workflow, ref)
    inputs = workflow[node_id].get("inputs", {})
    if "image" not in inputs or is_link(inputs["image"]):
        raise JobError(f"images: {node_label(workflow, node_id)} has no image file input to take "
                       f"{file_name}; name a LoadImage or LoadImageMask node", kind=Kind.PATCH)
    kind = "mask" if workflow[node_id].get("class_type") == "LoadImageMask" else "image"
    return kind, [(node_id, "image")]


def _upload_name(job_id: str, file_name: str, kind: str, taken: set[str], *,
                 png: bool = False) -> str:
    stem, ext = os.path.splitext(file_name)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:80] or "image"
    ext = ".png" if png else re.sub(r"[^A-Za-z0-9.]+", "", ext.lower())[:8]  # see mask_bytes
    if kind == "mask":
        stem = f"mask-{stem}"
    base = f"{job_id[:8]}-{stem}"
    name, n = f"{base}{ext}", 2
    while name in taken:
        name, n = f"{base}-{n}{ext}", n + 1
    taken.add(name)
    return name


def describe_bound(images: JobImages | None, uploads: Mapping[str, str] | None = None,
                   ) -> list[dict[str, Any]]:
    """The sidecar's `inputs`: each file as dropped, the nodes it went to, its upload."""
    out = []
    for item in images.bound if images else []:
        entry: dict[str, Any] = {"file": item.file, "kind": item.kind,
                                 "nodes": [nid for nid, _ in item.targets]}
        if item.info is not None:
            entry.update(format=item.info.format, width=item.info.width,
                         height=item.info.height, bytes=item.info.bytes)
        if uploads and item.key in uploads:
            entry["uploaded"] = uploads[item.key]
        out.append(entry)
    return out


# -- uploads --------------------------------------------------------------------------------


def upload(client: ComfyClient, server_name: str, state: JobState, workflow: dict[str, Any],
           images: JobImages | None, save: Callable[[], None]) -> None:
    """Make sure the job's images are on this server, then point the workflow at them.

    Each file is uploaded once per server (recorded in `state.uploads`); a server down is a
    `ServerError` (the job waits), a refusal a `JobError`.
    """
    if images is None or not images.bound:
        return
    done = state.uploads.setdefault(server_name, {})
    for item in images.bound:
        if item.key not in done:
            done[item.key] = _send(client, item, images, done)
            log.info("job.image_uploaded", file=item.file, kind=item.kind, server=server_name,
                     uploaded=done[item.key])
            save()
        for node_id, input_name in item.targets:
            workflow[node_id]["inputs"][input_name] = done[item.key]


def _send(client: ComfyClient, item: Bound, images: JobImages, done: Mapping[str, str]) -> str:
    if item.kind == "image":
        return client.upload_image(_read_checked(item, images), name=item.upload_name,
                                   subfolder=UPLOAD_SUBFOLDER)
    data, size = mask_bytes(_read_checked(item, images), item.file,
                            alpha=item.channel == "alpha")
    originals = [b for b in images.bound if b.kind == "image"]
    if item.channel != "alpha" or len(originals) != 1:
        return client.upload_image(data, name=item.upload_name, subfolder=UPLOAD_SUBFOLDER)
    original = originals[0]
    if original.info is not None and original.info.width and size != (original.info.width,
                                                                      original.info.height):
        raise JobError(f"the mask {item.file} is {size[0]}x{size[1]} pixels but the image "
                       f"{original.file} is {original.info.width}x{original.info.height}: a mask "
                       "must have its image's size", kind=Kind.INVALID_IMAGE)
    folder, _, name = done[original.key].rpartition("/")
    return client.upload_mask(data, name=item.upload_name, subfolder=UPLOAD_SUBFOLDER,
                              original={"filename": name, "subfolder": folder, "type": "input"})
