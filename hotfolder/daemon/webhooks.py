"""The sender: delivers the events finish.py queued, in a thread of its own.

A job never waits for a webhook: its events are on disk before it is filed, and this thread
sends them whenever it can. Each destination backs off on its own (capped exponential backoff,
retry.py) after a failed attempt, and while it does, its other events wait too: a dead receiver
costs one attempt per backoff period, not one per queued event, and cannot starve the others.
An event still undelivered `give_up_hours` after it was queued is given up. After a restart
the queue is simply read again, so nothing queued is lost to a stop or a crash.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests
import structlog

from hotfolder.config.model import Config, FolderConfig
from hotfolder.config.webhooks import WebhookConfig
from hotfolder.daemon import hookcall
from hotfolder.fsutil import clear_dead_temps
from hotfolder.job import events
from hotfolder.retry import Retry

log = structlog.get_logger()

SCAN_SECONDS = 5.0  # the queue is read again at least this often (events of other daemons)
JOIN_SECONDS = 2.0  # how long a stop waits for an attempt under way; the queue keeps it


@dataclass
class Destination:
    retry: Retry
    due: float = 0.0  # monotonic time of its next attempt
    attempts: dict[str, int] = field(default_factory=dict)  # event id -> attempts so far


class Sender:
    def __init__(self, config: Config) -> None:
        self.config = config
        # read by /metrics from another thread: every key exists from the start
        self.results: Counter[str] = Counter({"ok": 0, "failed": 0, "gave_up": 0})
        self.pending = 0  # events queued at the last look, for /metrics
        self._dests: dict[str, Destination] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._session: requests.Session | None = None  # opened by start()

    def start(self) -> Sender:
        self._session = requests.Session()
        for folder in self.config.folders:  # halves of queue files whose writer was killed
            clear_dead_temps(events.queue_dir(folder))
        self._thread.start()
        return self

    def update(self, config: Config) -> None:
        self.config = config
        events.queued.set()

    def alive(self) -> bool:
        return self._thread.is_alive() or self._stopping

    def close(self) -> None:
        """Stop; an attempt under way is given JOIN_SECONDS, then left (daemon thread): its
        event stays queued and is sent again after the next start."""
        self._stopping = True
        events.queued.set()
        if self._thread.is_alive():
            self._thread.join(JOIN_SECONDS)
        if self._thread.is_alive():  # its session is left to it: the process is ending
            log.info("webhook.left_pending", note="an attempt under way was not waited for; "
                     "its event stays queued and is sent after the next start")
        elif self._session is not None:
            self._session.close()

    def _run(self) -> None:
        while not self._stopping:
            events.queued.clear()
            try:
                wait = self.send_due()
            except Exception:  # a bug (or an unwritable queue) must not end the deliveries
                log.exception("webhook.internal_error")
                wait = SCAN_SECONDS
            events.queued.wait(wait)

    def send_due(self) -> float:
        """Send what is due; returns the seconds until something may be due again."""
        hooks = {h.ident: h for h in self.config.webhooks}
        waiting, soonest = 0, time.monotonic() + SCAN_SECONDS
        for folder in self.config.folders:
            for item in events.pending(folder):
                if self._stopping:
                    return 0.0
                hook = hooks.get(item.ident)
                if hook is None:
                    self._give_up(item, None, "no webhook with this url or exec is configured")
                elif time.time() - item.mtime > hook.give_up_hours * 3600:
                    self._give_up(item, hook, f"undelivered for {hook.give_up_hours:g} hours")
                elif self._dest(hook).due > time.monotonic() \
                        or not self._attempt(folder, item, hook):  # it backs off: still queued
                    waiting += 1
                    soonest = min(soonest, self._dest(hook).due)
        self.pending = waiting
        return max(0.05, soonest - time.monotonic())

    def _dest(self, hook: WebhookConfig) -> Destination:
        dest = self._dests.get(hook.ident)
        if dest is None or dest.retry.policy != hook.backoff:
            dest = self._dests[hook.ident] = Destination(hook.backoff.start())
        return dest

    def _attempt(self, folder: FolderConfig, item: events.Queued, hook: WebhookConfig) -> bool:
        """One attempt; True when the event has left the queue."""
        data = events.read_item(item.path)
        if data is None:
            if item.path.exists():
                log.warning("webhook.unreadable", file=item.path.name, folder=folder.name,
                            action="removed")
                item.path.unlink(missing_ok=True)
            return True
        dest = self._dest(hook)
        attempt = dest.attempts.get(item.event_id, 0) + 1
        if hook.url is not None:
            assert self._session is not None
            result = hookcall.post(self._session, hook, data["id"], data["body"].encode())
        else:
            result = hookcall.run(hook, data, lambda: self._stopping)
        fields = {"url": hook.shown, "event_id": data["id"], "type": data["type"],
                  "job": data["job"], "folder": folder.name, "attempt": attempt,
                  "status_code": result.status}
        if result.ok:
            item.path.unlink(missing_ok=True)
            dest.attempts.pop(item.event_id, None)
            dest.retry.reset()
            self.results["ok"] += 1
            log.info("webhook.sent", **fields)
            return True
        dest.attempts[item.event_id] = attempt
        delay = dest.retry.next_delay()
        dest.due = time.monotonic() + delay
        self.results["failed"] += 1
        log.warning("webhook.failed", **fields, error=result.error,
                    retry_in=round(delay, 2))
        return False

    def _give_up(self, item: events.Queued, hook: WebhookConfig | None, why: str) -> None:
        item.path.unlink(missing_ok=True)
        attempts = self._dests[hook.ident].attempts.pop(item.event_id, 0) \
            if hook is not None and hook.ident in self._dests else 0
        self.results["gave_up"] += 1
        log.error("webhook.gave_up", url=hook.shown if hook else None, event_id=item.event_id,
                  attempts=attempts, reason=why)
