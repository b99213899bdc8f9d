"""The daemon: watcher, worker threads and servers, held together by one health-checked loop.

Signal handlers only set events; everything else happens in the loop. Workers claim a file only
when a server has a slot for it, and the scheduler (dispatch.py, schedule.py) chooses which of
the waiting files that is, so the inbox itself is the queue. The first SIGTERM drains: nothing
new is claimed or submitted, prompts already on ComfyUI may finish and deliver within the grace
period, the rest stay in processing/ with their state for the next start. A second one stops at
once. SIGHUP re-reads the config.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hotfolder.comfy.pool import ServerPool
from hotfolder.config.load import load_config
from hotfolder.config.model import Config, FolderConfig
from hotfolder.daemon.dispatch import Dispatcher
from hotfolder.daemon.live import LiveStatus
from hotfolder.daemon.status import collect, folder_counts, status_line
from hotfolder.daemon.wakeup import Wakeup
from hotfolder.daemon.webhooks import Sender
from hotfolder.daemon.workers import Work, Workers
from hotfolder.errors import Cancelled, ConfigError
from hotfolder.fsutil import clear_dead_temps
from hotfolder.invocation import command
from hotfolder.job.claim import BeingWritten, Orphans, claim
from hotfolder.job.companions import sweep as sweep_inputs
from hotfolder.job.finish import fail_unclaimed
from hotfolder.job.pipeline import Pipeline
from hotfolder.job.prune import prune
from hotfolder.job.state import JobState, Outcome
from hotfolder.job.watch import InboxWatcher
from hotfolder.jobfile import Refused, refusal
from hotfolder.notify import Notifier
from hotfolder.web.metrics import JobMetrics
from hotfolder.writers import ignore_lease_breaks

if TYPE_CHECKING:
    from hotfolder.web.server import WebServer

log = structlog.get_logger()

TICK = 0.1
IDLE_TICK = 0.5  # nothing to settle, nothing running: see _loop
ORPHAN_SCAN_SECONDS = 5.0
PRUNE_SECONDS = 3600.0
STATUS_SECONDS = 1.0  # how often the live status is looked at
HEALTH_STALE_SECONDS = 60.0  # /healthz fails when the loop has not proved itself for this long
# (the unit's WatchdogSec: a blocking probe of a silent server can hold the loop ~30 s)


def ensure_folders(config: Config, *, running: bool = False) -> None:
    """Create every folder, and clear the halves of files whose writer was killed mid-write
    (`running`: on a reload, this process's own half-written files are live)."""
    for folder in config.folders:
        for path in folder.all_dirs():
            path.mkdir(parents=True, exist_ok=True)
            clear_dead_temps(path, ours_alive=running)


class Daemon:
    def __init__(self, config: Config, *, once: bool = False,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.once = once
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()  # abort: leave everything where it is
        self.draining = threading.Event()  # claim and submit nothing new
        self.reload_requested = False
        self.pool = ServerPool(config.servers, config.comfy, self.stop, self.draining)
        self.pipeline = Pipeline(config, self.pool, self.stop, self.draining)
        self.wakeup = Wakeup()  # the observer, a signal, a stop request: tick now
        self.watcher = InboxWatcher(config.folders, self._ready, self._cancel,
                                    wake=self.wakeup.wake)
        self.dispatcher = Dispatcher(config, self.pool)
        self.workers = Workers(self._handle, self.stop, self.dispatcher)
        self.pool.on_free = self.workers.poke
        self.orphans = Orphans(config.lease_seconds)
        self._next = {"orphans": 0.0, "heartbeat": 0.0, "prune": 0.0, "status": 0.0, "health": 0.0}
        self._drain_deadline: float | None = None
        self.live = LiveStatus()
        self.metrics = JobMetrics()
        self.sender = Sender(config)  # webhooks, in a thread of their own
        self.web: WebServer | None = None
        self._loop_ok_at: float | None = None  # when the loop last found everything alive

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        ensure_folders(self.config)
        if self.config.http.enabled:
            from hotfolder.web.server import WebServer  # the page's code only when it is on

            try:
                self.web = WebServer(self).start()
            except OSError as exc:
                log.error("web.listen_failed", listen=self.config.http.listen, error=str(exc))
                return 1
        self._install_signals()
        log.info("daemon.starting", config=str(self.config.path or ""),
                 folders=[str(f.root) for f in self.config.folders],
                 servers=[s.url for s in self.config.servers])
        self.pool.start()
        if not self.pool.check_all():
            log.warning("server.waiting",
                        message="no ComfyUI server answers yet; jobs wait until one does. "
                                f"Start ComfyUI, or try `{command('demo')}` to see hotfolder work "
                                "against its built-in simulator.")
        for folder in self.config.folders:
            sweep_inputs(folder)  # images whose job left processing/ just before a crash
        self._adopt_orphans(at_start=True)
        self.sender.start()
        self.watcher.start()
        self._add_workers()
        log.info("daemon.ready", inboxes=[str(f.inbox) for f in self.config.folders])
        self.notifier.ready(self._status_line())
        try:
            return self._loop()
        finally:
            self.shutdown()

    def _loop(self) -> int:
        while not self.stop.is_set():
            now = time.monotonic()
            self._take_signals()
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            if self.draining.is_set() and self._drained(now):
                break
            if not self.draining.is_set():
                with self.workers.held():
                    self.watcher.tick(now)
            self.pool.probe(now)
            self._housekeeping(now)
            if now >= self._next["health"]:  # ~100 threads: once a second (or per watchdog ping)
                dead = self._dead()
                if dead:
                    log.error("daemon.unhealthy", dead=dead,
                              action="stopping so the service manager restarts us")
                    return 1
                self._next["health"] = now + min(1.0, self.notifier.watchdog_seconds or 1.0)
                self._loop_ok_at = now
                self.notifier.watchdog(now)  # only from a loop that just proved itself healthy
            if self.once and self._idle():
                break
            # an idle daemon ticks slowly (its own CPU is most of what it costs then); the
            # observer's first report of a new file, or a signal, wakes it at once
            self.wakeup.wait(TICK if self._busy() else IDLE_TICK)
        return 0

    def _drained(self, now: float) -> bool:
        if self._drain_deadline is None:
            self._drain_deadline = now + self.config.stop_grace_seconds
            self.notifier.stopping()
            log.info("daemon.stopping", running=self.workers.running(),
                     grace_seconds=self.config.stop_grace_seconds,
                     note="nothing new is claimed; jobs on ComfyUI may finish")
        running = self.workers.running()
        if running and now < self._drain_deadline:
            return False
        if running:
            log.info("daemon.grace_over", left=running,
                     note="left in processing/ with their state, resumed at the next start")
        return True

    def shutdown(self) -> None:
        self.stop.set()
        self.watcher.stop()
        self.pool.close()
        self.workers.join(10.0)
        self.sender.close()
        self.live.stopped(self.config.folders, self.pool.describe())
        if self.web is not None:
            self.web.stop()
        self.wakeup.close()
        log.info("daemon.stopped", **self.workers.counts)

    def _dead(self) -> list[str]:  # threads that should run and do not: a bug, we restart
        parts = [("watcher", self.watcher), ("workers", self.workers), ("webhooks", self.sender),
                 *((f"listener {s.name}", s.listener) for s in self.pool.servers)]
        return [name for name, part in parts if not part.alive()]

    def _busy(self) -> bool:
        return (self.workers.busy() or not self.watcher.quiet() or self.draining.is_set()
                or self.reload_requested)

    def _idle(self) -> bool:
        return self.workers.idle() and self.watcher.idle()

    def _install_signals(self) -> None:
        self.wakeup.catch(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        ignore_lease_breaks()  # before any file is asked about its writers (writers.py)

    def _take_signals(self) -> None:
        """Act on the signals received (the handlers only note them: wakeup.py)."""
        for signum in self.wakeup.take():
            if signum == signal.SIGHUP:
                self.reload_requested = True
            elif self.draining.is_set():
                self.stop.set()  # a second request: stop now
            else:
                self.draining.set()

    def request_stop(self) -> None:
        """Stop now, from another thread (the demo's, a test's)."""
        self.stop.set()
        self.wakeup.wake()

    def _add_workers(self) -> None:
        self.workers.grow(sum(s.limit for s in self.pool.servers if not s.retired) + 2)

    # -- reload (SIGHUP) ---------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config; on any problem keep running on the old one and say why."""
        self.notifier.reloading()
        path = self.config.path
        try:
            if path is None:
                raise ConfigError(["the daemon was not started from a config file"])
            new = load_config(path)
            ensure_folders(new, running=True)
        except (ConfigError, OSError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            log.error("config.reload_failed", problems=problems,
                      action="still running on the previous configuration")
            self.notifier.ready(self._status_line())
            return
        if new.http.listen != self.config.http.listen:
            log.warning("config.http_listen_unchanged", listen=self.config.http.listen,
                        note="http.listen takes effect at the next start")
        old_folders = {f.name for f in self.config.folders}
        new_folders = {f.name for f in new.folders}
        servers = self.pool.update(new.servers, new.comfy)
        self.config = new
        self.pipeline.update(new)
        self.dispatcher.update(new)
        self.sender.update(new)
        self.orphans.lease_seconds = new.lease_seconds
        self.watcher.stop()
        self.watcher = InboxWatcher(new.folders, self._ready, self._cancel, wake=self.wakeup.wake)
        self.watcher.start()
        self._add_workers()
        log.info("config.reloaded", folders_added=sorted(new_folders - old_folders),
                 folders_removed=sorted(old_folders - new_folders), **servers,
                 note="jobs in flight continue where they are")
        self.notifier.ready(self._status_line())

    # -- housekeeping ---------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> None:
        self.workers.unpark(now)
        if now >= self._next["orphans"] and not self.draining.is_set():
            self._next["orphans"] = now + ORPHAN_SCAN_SECONDS
            self._adopt_orphans()
        if now >= self._next["heartbeat"]:
            self._next["heartbeat"] = now + self.config.lease_seconds / 4
            for folder, state in self._owned():
                state.renew(folder, self.config.lease_seconds)
        if now >= self._next["prune"]:
            self._next["prune"] = now + PRUNE_SECONDS
            for folder in self.config.folders:
                prune(folder)
        if now >= self._next["status"]:
            self._next["status"] = now + STATUS_SECONDS
            self._write_status()
            self.notifier.status(self._status_line())

    def _owned(self) -> list[tuple[FolderConfig, JobState]]:
        return [(self.pipeline.folder(f), s) for f, s in self.workers.owned()]

    def _write_status(self, force: bool = False) -> None:
        self.live.write(self.config.folders, self._owned(), self.pool, self.watcher, force=force)

    # -- what the status page and /metrics show --------------------------------------------------

    def status_document(self) -> dict[str, Any]:
        """`hotfolder status --json`'s document, with the live part from memory."""
        return collect(self.config, probe=False,
                       live=self.live.documents(self.config.folders, self._owned(), self.pool,
                                                self.watcher))

    def health(self) -> dict[str, Any]:
        """Healthy while the loop keeps finding its threads alive (what the watchdog pings)."""
        ok_at = self._loop_ok_at
        age = None if ok_at is None else time.monotonic() - ok_at
        healthy = age is not None and age < HEALTH_STALE_SECONDS and not self.stop.is_set()
        state = ("stopping" if self.stop.is_set() else "starting" if age is None
                 else "ok" if healthy else "stalled")
        return {"healthy": healthy, "state": state, "draining": self.draining.is_set(),
                "loop_age_seconds": None if age is None else round(age, 3)}

    def metrics_text(self) -> str:
        running = self.workers.running_by_folder()
        folders = {f.name: (folder_counts(f)["waiting"], running.get(f.name, 0))
                   for f in self.config.folders}
        errors = {(s.name, operation, kind): n for s in self.pool.servers
                  for (operation, kind), n in s.client.error_counts().items()}
        return self.metrics.render(folders=folders, servers=self.pool.describe(),
                                   server_errors=errors, healthy=self.health()["healthy"],
                                   webhooks=(dict(self.sender.results), self.sender.pending))

    def _status_line(self) -> str:
        counts = {"running": self.workers.running(), "waiting": self.workers.waiting(),
                  **self.workers.counts}
        return status_line(counts, self.pool.describe())

    def _adopt_orphans(self, at_start: bool = False) -> None:
        for folder in self.config.folders:
            busy = {s.name for f, s in self.workers.owned() if f == folder.name}
            for state in self.orphans.scan(folder, busy, at_start=at_start):
                log.info("job.resuming", job=state.source, folder=folder.name,
                         prompt_id=state.prompt_id, server=state.server, phase=state.phase)
                self.workers.own(folder, state)
                self.workers.enqueue(Work(folder, state=state))

    # -- work -------------------------------------------------------------------------------------

    def _ready(self, folder: FolderConfig, path: Path, detected_at: float,
               ready_by: str | None = None) -> None:
        self.workers.enqueue(Work(folder, path=path, detected_at=detected_at, ready_by=ready_by))

    def _cancel(self, folder: FolderConfig, cancel_file: Path) -> None:
        """`NAME.cancel` in the inbox: stop the job NAME (or NAME.ext), wherever it is."""
        target = cancel_file.name[: -len(".cancel")]
        running = [s for f, s in self.workers.owned() if f == folder.name
                   and target in {s.source, s.name, Path(s.source).stem, Path(s.name).stem}]
        waiting = [p for p in folder.inbox.iterdir() if p != cancel_file
                   and target in (p.name, p.stem) and _plain(p)]  # a file or a job folder
        for state in running:
            self.pipeline.request_cancel(folder, state)
        for path in waiting:
            if fail_unclaimed(folder, path, Cancelled("a .cancel file asked for it before the job "
                                                      "started")):
                self.metrics.finished(folder.name, "failed", "cancelled", seen_at=None,
                                      submitted_at=None, now=time.time())
        if not running and not waiting:
            log.info("job.cancel_unmatched", file=cancel_file.name, folder=folder.name,
                     reason="no waiting or running job has that name")
        cancel_file.unlink(missing_ok=True)

    def _handle(self, work: Work) -> Outcome | None:
        state = work.state
        if state is None:
            assert work.path is not None
            if self.draining.is_set():
                self.watcher.release(work.path)
                return None  # stays in the inbox for the next start
            try:
                with self.workers.lock:  # owned before the rename: never seen as an orphan
                    state = claim(work.folder, work.path, work.detected_at,
                                  ask_writers=work.folder.ready == "auto")
                    if state is not None:
                        self.workers.active[(work.folder.name, state.name)] = state
            except BeingWritten:
                self.watcher.look_again(work.path)  # it waits for its writer to close it
                return None
            except (Refused, OSError) as exc:  # swapped for a link since it was seen, unreadable
                reason = exc.reason if isinstance(exc, Refused) else f"cannot be claimed: {exc}"
                log.warning("job.refused", file=repr(work.path.name), folder=work.folder.name,
                            reason=reason, action="left where it is, unread, until it changes")
                self.watcher.refused(work.path)
                return None
            self.watcher.release(work.path)
            if state is None:
                return None
            log.info("job.claimed", job=state.source, folder=work.folder.name,
                     ready_by=work.ready_by,
                     waited=round(time.time() - (work.detected_at or time.time()), 3))
        parked = False
        try:
            outcome = self.pipeline.run(work.folder, state, work.slot)
            if outcome.status == "parked":  # still ours: picked up again when it is due
                parked = True
                self.workers.park(Work(work.folder, state=state), outcome.retry_in)
                return None
            self.metrics.finished(work.folder.name, outcome.status, outcome.kind,
                                  seen_at=state.detected_at or state.claimed_at,
                                  submitted_at=state.submitted_at, now=time.time())
            return outcome
        finally:
            if not parked:
                self.workers.release(work.folder, state)


def _plain(path: Path) -> bool:
    """An inbox entry a job could be: never a link, FIFO, device or hard link."""
    try:
        return refusal(path.name, path.lstat()) is None
    except OSError:
        return False
