"""What is recorded about a job while it lives in processing/, so a restart resumes it.

`JobState` is the job's record (a hidden JSON file beside it: who owns it, which server and
prompt_id it went to, what was delivered); a batch's runs are `RunState`s, appended to a
journal instead, because rewriting one record holding every run after each step would cost
O(runs²) a batch. `Outcome` is what a finished (or paused) job tells the daemon.

An owner refreshes its lease while the job lives; claim.py decides when a job whose owner is
gone may be adopted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hotfolder.config.model import LEASE_SECONDS, FolderConfig
from hotfolder.fsutil import json_line, write_json

# the name this daemon goes by in job records: two machines sharing a host name (containers)
# set HOTFOLDER_NODE, or each would take the other's processes for its own
HOST = os.environ.get("HOTFOLDER_NODE") or socket.gethostname()
# tests only: this daemon's wall clock, shifted (leases must never depend on it)
_CLOCK_SHIFT = float(os.environ.get("HOTFOLDER_TEST_CLOCK_SHIFT") or 0)

INSTANCE = uuid.uuid4().hex  # this process; a pid alone can be reused after a restart


def wall() -> float:
    """The wall clock as this daemon stamps records with it."""
    return time.time() + _CLOCK_SHIFT


def owner_me() -> dict[str, Any]:
    return {"host": HOST, "pid": os.getpid(), "instance": INSTANCE}


@dataclass
class Life:
    """What a job holds while this process runs it, never saved: a restart starts afresh."""

    images: Any = None  # the job's images, checked and bound (an images.JobImages)
    # one upload at a time per job: a batch's runs then share one upload per server (two at
    # once could each see "not there yet", and ComfyUI may rename a file it is still writing)
    upload_lock: threading.Lock = field(default_factory=threading.Lock)
    download_tries: int = 0  # downloads broken off since this life began


@dataclass
class JobState:
    name: str  # the job file's name inside processing/
    folder: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source: str = ""  # the name it had in the inbox
    detected_at: float | None = None
    claimed_at: float = field(default_factory=time.time)
    owner: dict[str, Any] = field(default_factory=owner_me)
    # renewed (with the owner's wall clock) every lease/4 seconds while the owner lives; an
    # observer on another machine watches it change on its own clock, never compares it
    lease_until: float = field(default_factory=lambda: wall() + LEASE_SECONDS)
    server: str | None = None
    prompt_id: str | None = None
    client_id: str | None = None
    submitted_at: float | None = None
    submissions: int = 0
    seed: int | None = None  # chosen once, so a resubmitted job keeps its seed
    out_stem: str | None = None  # the outbox base name, chosen before the first download
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)  # output key -> file
    expected: int | None = None  # how many outputs the finished prompt has
    # claimed (waiting to be prepared, or for a slot) | preparing | submitting | submitted |
    # delivering | parked
    # | stopped | being written | batch: …; saved with the record, so a daemon that dies while
    # a job is in a RISKY_PHASES phase may have died of the job, and `crashes` counts that
    phase: str = "claimed"
    # the file (or job folder) as claimed, then as last read: inode, size, mtime (jobfile.py)
    file: dict[str, Any] | None = None
    read: dict[str, Any] | None = None  # bytes and sha256 of the job file as it ran
    reruns: int = 0  # runs repeated because the job file changed while it ran
    crashes: int = 0
    generation: int = 0  # how often the job was adopted: each owner holds its own (claim.adopt)
    uploads: dict[str, dict[str, str]] = field(default_factory=dict)  # server -> file -> name
    priority: int = 0  # the folder's plus the job's own
    models: list[str] | None = None  # what the prompt as submitted loads (workflow/models.py)
    model_switch: bool | None = None  # its server had other models loaded (None: not known)
    life: Life = field(default_factory=lambda: Life(), repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _closed: bool = field(default=False, repr=False, compare=False)
    _saved: bool = field(default=False, repr=False, compare=False)
    # lines this object appended since it last wrote the record whole (None: never did)
    _appended: int | None = field(default=None, repr=False, compare=False)

    @staticmethod
    def path_for(folder: FolderConfig, name: str, suffix: str = ".state.json") -> Path:
        if len(os.fsencode(name)) > 180:  # keep ".NAME.state.json" under NAME_MAX (255 bytes)
            name = hashlib.sha1(os.fsencode(name), usedforsecurity=False).hexdigest()
        return folder.processing / f".{name}{suffix}"

    @staticmethod
    def inputs_path(folder: FolderConfig, name: str) -> Path:
        """The hidden folder holding the images a job took from the inbox (companions.py)."""
        return JobState.path_for(folder, name, ".inputs")

    @staticmethod
    def adoption_path(folder: FolderConfig, name: str, generation: int) -> Path:
        """Created exclusively by whoever adopts the job for `generation` (claim.adopt)."""
        return JobState.path_for(folder, name, f".adopted.{generation}")

    @staticmethod
    def journal_for(folder: FolderConfig, name: str) -> Path:
        """Where a batch job's runs are journalled (see RunState)."""
        record = JobState.path_for(folder, name)
        return record.with_name(record.name[: -len(".state.json")] + ".runs.jsonl")

    @property
    def tag(self) -> str:
        """Distinguishes this job's ComfyUI output names (its filename_prefix)."""
        return self.job_id[:8]

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in _PERSISTED}

    def share_uploads(self, parent: JobState) -> None:
        """A batch's runs upload each image once per server, for all of them."""
        self.uploads, self.life.upload_lock = parent.uploads, parent.life.upload_lock

    def save(self, folder: FolderConfig, *, durable: bool = True) -> None:
        """Write the record; a no-op once the job has finished (a late heartbeat must not
        bring a finished job's record back). `durable: False` for what only a crash of this
        process must not lose (fsutil.write_json).

        The record is a file of JSON lines, the last complete one being the record. The
        first save of this object writes it whole (temp name + rename), so a line cut short
        by an earlier crash, or another owner's lines, are gone; later saves append a line,
        and every RECORD_LINES lines it is written whole again. A job is saved several times;
        a new file each time cost a file creation and a deletion each, which on some file
        systems (ext4 without a journal) is the daemon's largest cost per job."""
        with self._lock:
            if self._closed:
                return
            path = self.path_for(folder, self.name)
            if self._appended is not None and self._appended < RECORD_LINES:
                try:
                    append_line(path, self.record(), durable=durable)
                    self._appended += 1
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ELOOP):
                        raise
                    # removed meanwhile (by hand), or a link put in its place: written whole
            write_json(path, self.record(), replace=True, compact=True, durable=durable)
            self._appended = 0
            self._saved = True

    @property
    def saved(self) -> bool:
        return self._saved

    def renew(self, folder: FolderConfig, lease_seconds: float = LEASE_SECONDS) -> None:
        self.lease_until = wall() + lease_seconds
        self.save(folder)

    def drop(self, folder: FolderConfig) -> None:
        with self._lock:
            self._closed = True
            self.path_for(folder, self.name).unlink(missing_ok=True)
            self.journal_for(folder, self.name).unlink(missing_ok=True)
            for generation in range(self.generation, 0, -1):
                self.adoption_path(folder, self.name, generation).unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: FolderConfig, name: str) -> JobState | None:
        data = read_record(cls.path_for(folder, name))
        if data is None:
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k in _PERSISTED})
        except (TypeError, ValueError):
            return None


RECORD_LINES = 32  # lines appended to a job's record before it is written whole again
MAX_RECORD_BYTES = 1024 * 1024  # what is read of a record: its end, where the last line is


def append_line(path: Path, data: dict[str, Any], *, durable: bool, create: bool = False) -> None:
    """One line onto a record (or a batch's journal, `create`d if need be); a reader meanwhile
    sees the line before it (a line read in part does not parse, `read_record` passes over
    it)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, json_line(data).encode("utf-8"))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_record(path: Path) -> dict[str, Any] | None:
    """The last complete line of a job's record that is a JSON object, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - MAX_RECORD_BYTES)
        chunks, at = [], start
        while at < size and (chunk := os.pread(fd, size - at, at)):
            chunks.append(chunk)
            at += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    for line in reversed(b"".join(chunks).split(b"\n")):
        try:
            data = json.loads(line)
        except ValueError:
            continue  # empty, or cut short (by a crash, or being written right now)
        if isinstance(data, dict):
            return data
    return None


_PERSISTED = frozenset(f.name for f in fields(JobState)
                       if f.name != "life" and not f.name.startswith("_"))


# -- a batch's runs -----------------------------------------------------------------------------
# Each save appends the run's record as one line to `.NAME.runs.jsonl`, fsync'd; loading keeps
# each run's last line. A line cut short by a crash is skipped: that run resumes from its
# previous step.

RUN_FIELDS = ("index", "status", "error", "params", "outputs", "job_id", "seed", "server",
              "prompt_id", "client_id", "submitted_at", "submissions", "out_stem",
              "delivered", "expected", "phase", "started_at", "finished_at", "models",
              "model_switch")


@dataclass
class RunState(JobState):
    index: int = 0  # 1-based, as in the manifest and the output names
    status: str = "pending"  # pending | done | failed
    error: dict[str, Any] | None = None  # message, kind, details of a failed run
    params: dict[str, Any] = field(default_factory=dict)  # the run's own fields and set:
    outputs: list[str] = field(default_factory=list)  # file names in the batch's folder
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def tag(self) -> str:
        return f"{self.job_id[:8]}-{self.index:04d}"

    def record(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in RUN_FIELDS}

    def save(self, folder: FolderConfig) -> None:
        with self._lock:
            if self._closed:
                return
            append_line(JobState.journal_for(folder, self.name), self.record(), durable=True,
                        create=True)
            self._saved = True

    def renew(self, folder: FolderConfig, now: float | None = None) -> None:
        """The batch's own record holds the lease."""

    def drop(self, folder: FolderConfig) -> None:
        with self._lock:
            self._closed = True


def load_runs(folder: FolderConfig, parent: JobState) -> dict[int, RunState]:
    """Each run's last journal line, as a RunState of `parent` (empty for a new batch)."""
    runs: dict[int, RunState] = {}
    try:
        text = JobState.journal_for(folder, parent.name).read_text(encoding="utf-8")
    except OSError:
        return runs
    for line in text.splitlines():
        try:
            data = json.loads(line)
            run = new_run(parent, int(data["index"]))
            for key in RUN_FIELDS:
                if key in data:
                    setattr(run, key, data[key])
        except (ValueError, KeyError, TypeError):
            continue  # the tail of a write cut short
        runs[run.index] = run
    return runs


def new_run(parent: JobState, index: int) -> RunState:
    return RunState(name=parent.name, folder=parent.folder, source=parent.source,
                    job_id=parent.job_id, detected_at=parent.detected_at,
                    claimed_at=parent.claimed_at, owner=parent.owner, index=index,
                    priority=parent.priority)


@dataclass
class Record:
    """What the sidecar says about a job (and the manifest about each run of a batch), filled
    in by the stages as they go: what ran, where, and how long it took."""

    job: str  # the name it was dropped as
    folder: str
    job_file: dict[str, Any] | None = None  # bytes and sha256 of the file as it ran
    reran: dict[str, Any] | None = None  # why it ran again (its file changed), and before
    # from prepare: the template, what was asked for, the values actually sent
    workflow: str | None = None
    kind: str | None = None  # prompt | spec | workflow | image
    prompt: Any = None
    negative: Any = None
    seed: Any = None
    fields: dict[str, Any] | None = None
    set: dict[str, Any] | None = None
    filename_prefix: str | None = None
    converted_from: str | None = None  # "gui": converted from the editor's Save ...
    converted_with: str | None = None  # ... with this server's node definitions
    server: str | None = None
    prompt_id: str | None = None
    priority: int | None = None  # shown when not 0
    models: list[str] | None = None  # what the prompt loads, and whether its server had to
    model_switch: bool | None = None  # load them (None: what it had loaded was not known)
    timings: dict[str, Any] | None = None
    manifest: str | None = None  # a batch's manifest.json

    def as_dict(self) -> dict[str, Any]:
        """For the sidecar: what is known so far (what prepare filled in is shown even when it
        is empty, e.g. a template without a negative prompt)."""
        prepared = self.workflow is not None
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None
                or (prepared and f.name in _PREPARED)
                or (f.name == "model_switch" and self.models is not None)}


_PREPARED = frozenset({"workflow", "kind", "prompt", "negative", "seed", "fields", "set",
                       "filename_prefix"})


@dataclass
class Outcome:
    status: str  # done | failed | left | parked
    job_file: Path | None = None
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    kind: str | None = None  # the JobError's kind, for a failed job
    retry_in: float = 0.0  # parked: seconds until the job is picked up again
