"""The state of each run of a batch job, kept in an append-only journal beside its record.

A run is followed through the same steps as a single job (submit, follow, deliver), so it is
a `JobState` too; only where it is saved differs. Rewriting one record holding every run
after each step would cost O(runs) a step, O(runs²) a batch; instead each save appends the
run's record as one line to `.NAME.runs.jsonl`, fsync'd, and loading keeps each run's last
line. A line cut short by a crash is skipped: that run resumes from its previous step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from hotfolder.config.load import FolderConfig
from hotfolder.job.claim import JobState

RUN_FIELDS = ("index", "status", "error", "params", "outputs", "job_id", "seed", "server",
              "prompt_id", "client_id", "submitted_at", "submissions", "out_stem",
              "delivered", "expected", "phase", "started_at", "finished_at")


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
        line = json.dumps(self.record(), separators=(",", ":"), ensure_ascii=False,
                          default=str) + "\n"
        with self._lock:
            if self._closed:
                return
            fd = os.open(JobState.journal_for(folder, self.name),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
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
                    claimed_at=parent.claimed_at, owner=parent.owner, index=index)
