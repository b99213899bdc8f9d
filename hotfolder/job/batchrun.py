"""Run a batch job: each run through the same stages as a single job, several at once.

Runs share the in-flight window and the server pool with every other job (each takes a slot
with `acquire`, like a single job), so a 200-run CSV keeps all servers busy without shutting
out the folder's other drops for long. Each run is journalled (state.RunState): after a restart,
finished runs are kept, runs on a server are followed there, and only the rest are submitted.
Outputs go to `outbox/<job-name>/`, named `<job-name>-<run>_<n>`, beside a `manifest.json`
that says, run by run, what was asked, what came out and what went wrong.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from hotfolder.config.model import FolderConfig
from hotfolder.credentials import redact
from hotfolder.errors import Cancelled, JobError, Kind, Stopping
from hotfolder.fsutil import candidates
from hotfolder.job.companions import job_image_files
from hotfolder.job.context import Context
from hotfolder.job.deliver import fetch
from hotfolder.job.events import batch_data
from hotfolder.job.finish import finish_batch, finish_failed, iso_time
from hotfolder.job.intake import StillWritten, verify_content, verify_unchanged
from hotfolder.job.naming import job_stem, release_stem
from hotfolder.job.parse import JobSpec
from hotfolder.job.prepare import prepare
from hotfolder.job.state import JobState, Outcome, Record, RunState, load_runs, new_run
from hotfolder.job.submit import execute
from hotfolder.outdir import OutDir

log = structlog.get_logger()

MANIFEST = "manifest.json"
RECORDED = ("prompt", "negative", "seed", "fields", "set", "workflow", "server", "prompt_id",
            "models", "model_switch", "timings")  # what the manifest keeps of each run's record


class BatchRun:
    def __init__(self, ctx: Context, folder: FolderConfig, state: JobState,
                 spec: JobSpec, record: Record) -> None:
        self.ctx, self.folder, self.state, self.spec = ctx, folder, state, spec
        self.record = record
        self.stem = job_stem(state.source or state.name)
        self.stopping = False
        self.cancelled: Cancelled | None = None
        self._lock = threading.Lock()
        self._ended = 0

    def run(self) -> Outcome:
        folder, state = self.folder, self.state
        total = len(self.spec.runs)
        known = load_runs(folder, state)
        runs = [known.get(i) or new_run(state, i) for i in range(1, total + 1)]
        if not any(r.submissions for r in runs):
            verify_unchanged(folder, state)  # right before the first run is submitted
        with self._reserve_dir() as outbox:
            state.expected = total
            todo = [r for r in runs if r.status == "pending"]
            self._take_images(todo)
            self._ended = total - len(todo)
            state.phase = self._phase()
            state.save(folder)
            log.info("batch.started", runs=total, to_run=len(todo), folder_out=outbox.path.name,
                     resumed=len(known) > 0)
            if todo:
                slots = sum(s.limit for s in self.ctx.pool.eligible(folder.server_tags))
                with ThreadPoolExecutor(max_workers=min(len(todo), max(1, slots)),
                                        thread_name_prefix="batch") as pool:
                    list(pool.map(lambda r: self._one(r, outbox), todo))
                self.ctx.clear_cancel(folder, state)  # the last run's request, unconsumed
            if any(r.status == "pending" for r in runs) and not self.cancelled:
                raise Stopping  # the daemon is stopping: the rest runs after the next start
            return self._finish(runs, outbox)

    def _take_images(self, todo: list[RunState]) -> None:
        """Take the images the runs name from the inbox once, before the runs start (they
        would race for them), and let every run share the job's uploads (one per server)."""
        named: set[tuple[tuple[str, str], ...]] = set()
        for run in todo:
            run.share_uploads(self.state)
            spec = self.spec.runs[run.index - 1]
            key = tuple(sorted(spec.images.items()))
            if key and key not in named:
                named.add(key)
                job_image_files(self.folder, self.state, spec, self.ctx.wait)

    def _reserve_dir(self) -> OutDir:
        """`outbox/<job-name>/`, or `<job-name>-2/` …: created exclusively, so it is ours, and
        held open for the whole batch: every output and the manifest are written relative to
        that descriptor, so the folder swapped for a link cannot redirect them."""
        outbox = self.folder.outbox
        if self.state.out_stem is None:
            outbox.mkdir(parents=True, exist_ok=True)
            for name in candidates(self.stem[:180]):
                try:
                    (outbox / name).mkdir()
                except FileExistsError:
                    continue
                self.state.out_stem = name
                break
            self.state.save(self.folder)
        assert self.state.out_stem is not None
        path = outbox / self.state.out_stem
        with contextlib.suppress(FileExistsError):
            path.mkdir(parents=True)
        try:
            held = OutDir(path)
        except OSError as exc:
            raise JobError(f"the batch's output folder {outbox.name}/{path.name}/ is no longer "
                           "a folder hotfolder made (it was replaced, by a link or a file); "
                           "nothing is written through it", kind=Kind.REFUSED) from exc
        held.clear_dead_temps()  # downloads cut short when a previous run was killed
        return held

    # -- one run ----------------------------------------------------------------------------

    def _one(self, run: RunState, outbox: OutDir) -> None:
        if self.stopping or self.cancelled or self.ctx.stop.is_set():
            return
        spec = self.spec.runs[run.index - 1]
        record = Record(job=self.record.job, folder=self.folder.name)
        with structlog.contextvars.bound_contextvars(job=record.job, folder=self.folder.name,
                                                     run=run.index):
            try:
                self._attempt(run, spec, record, outbox)
            except Stopping:
                self.stopping = True
            except Cancelled as exc:
                self.cancelled = exc
                # each check takes the request: ask again for the next run in flight
                self.ctx.request_cancel(self.folder, self.state)
            except JobError as exc:
                self._done(run, record, error={"message": exc.message, "kind": exc.kind,
                                                "details": redact(exc.details)})
                log.warning("run.failed", kind=exc.kind, reason=exc.message)
            except Exception as exc:  # a bug must not strand the batch
                log.exception("run.internal_error")
                self._done(run, record, error={
                    "message": f"hotfolder hit an internal error on this run "
                               f"({type(exc).__name__}: {exc}); please report it",
                    "kind": "internal", "details": {}})

    def _attempt(self, run: RunState, spec: JobSpec, record: Record,
                 outbox: OutDir) -> None:
        ctx = self.ctx
        run.started_at = run.started_at or time.time()
        run.out_stem = run.out_stem or f"{self.stem[:170]}-{run.index:04d}"
        workflow = prepare(ctx, self.folder, run, spec, record)
        if run.expected is not None and len(run.delivered) >= run.expected:
            files = list(run.delivered.values())  # delivered before a restart
        else:
            entry, server = execute(ctx, self.folder, run, workflow, record)
            files = fetch(ctx, self.folder, run, entry, server, workflow, record, outbox,
                          park=False)
        release_stem(outbox.path, run)
        run.outputs = [f["file"] for f in files]
        self._done(run, record)
        log.info("run.finished", outcome="done", prompt_id=run.prompt_id,
                 outputs=run.outputs)

    def _done(self, run: RunState, record: Record,
              error: dict[str, Any] | None = None) -> None:
        run.params = {k: getattr(record, k) for k in RECORDED if getattr(record, k) is not None}
        run.status = "failed" if error else "done"
        run.error = error
        run.finished_at = time.time()
        run.save(self.folder)
        with self._lock:
            self._ended += 1
            self.state.phase = self._phase()  # shown by `hotfolder status` and the page

    def _phase(self) -> str:
        return f"batch: {self._ended} of {len(self.spec.runs)} runs ended"

    # -- the end ------------------------------------------------------------------------------

    def _finish(self, runs: list[RunState], outbox: OutDir) -> Outcome:
        folder, state = self.folder, self.state
        try:
            verify_content(folder, state)  # what goes to done/ is what ran, or it runs again
        except StillWritten:
            superseded = [name for r in runs for name in r.outputs if outbox.unlink(name)]
            JobState.journal_for(folder, state.name).unlink(missing_ok=True)
            log.warning("batch.superseded", outputs=len(superseded),
                        note="the batch file changed while its runs ran")
            raise
        failed = [r for r in runs if r.status == "failed"]
        done = [r for r in runs if r.status == "done"]
        status = ("cancelled" if self.cancelled else
                  "failed" if (not done or (failed and folder.batch_fail == "any")) else
                  "done" if not failed else "partly done")
        manifest = self._manifest(runs, status)
        outbox.write_json(MANIFEST, manifest, replace=True)
        outbox.chmod(MANIFEST, folder.file_mode)
        path = outbox / MANIFEST
        files = [outbox / name for r in done for name in r.outputs]
        hooks = self.ctx.config.webhooks
        batch = batch_data(folder.outbox, path, status, [r.status for r in runs], files)
        if self.cancelled:
            error = Cancelled(f"{self.cancelled.reason}; {len(done)} of {len(runs)} runs had "
                              f"finished (outputs kept in {folder.outbox.name}/"
                              f"{outbox.path.name}/)", details={"manifest": str(path)})
            return finish_failed(folder, state, error, self.record, hooks, batch)
        if status == "failed":
            return finish_failed(folder, state, _batch_error(failed, len(runs), outbox.path,
                                                             path), self.record, hooks, batch)
        self.record.manifest = str(path)
        return finish_batch(folder, state, self.record, files,
                            runs=len(runs), failed=len(failed), hooks=hooks, batch=batch)

    def _manifest(self, runs: list[RunState], status: str) -> dict[str, Any]:
        return {
            "job": self.record.job, "folder": self.folder.name, "status": status,
            "job_file": self.state.read,  # size and sha256 of the batch file the runs came from
            "runs_total": len(runs),
            "runs_done": sum(r.status == "done" for r in runs),
            "runs_failed": sum(r.status == "failed" for r in runs),
            "written_at": iso_time(time.time()),
            "runs": [{
                "run": r.index, "status": r.status if not self.cancelled or r.status != "pending"
                else "cancelled", **r.params, "seed": r.params.get("seed", r.seed),
                "prompt_id": r.prompt_id, "server": r.server, "outputs": r.outputs,
                **({"error": r.error["message"], "error_kind": r.error["kind"]}
                   if r.error else {}),
            } for r in runs],
        }


def _batch_error(failed: list[RunState], total: int, outbox: Path, manifest: Path) -> JobError:
    shown = "; ".join(f"run {r.index}: {(r.error or {}).get('message')}" for r in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    which = "every run" if len(failed) == total else f"{len(failed)} of {total} runs"
    return JobError(f"{which} failed: {shown}{more} (each run's result is in "
                    f"{outbox.parent.name}/{outbox.name}/{MANIFEST})", kind=Kind.BATCH_FAILED,
                    details={"manifest": str(manifest), "failed_runs": [
                        {"run": r.index, **(r.error or {})} for r in failed]})
