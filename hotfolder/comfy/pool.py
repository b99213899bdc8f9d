"""The ComfyUI servers and their in-flight slots: which server takes the next job, and when.

Each server holds at most `max_in_flight` of our prompts, so the next job is already queued when
the current one ends, while the rest wait in the inbox where another daemon could take them;
one more for a job above every prompt of ours there, so that a rush job need not wait for a
slot. A server that stops answering is out of rotation until a probe sees it answer again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import structlog

from hotfolder.comfy.counting import CountingClient
from hotfolder.comfy.listener import CompletionListener
from hotfolder.comfy.transport import TransferLimits
from hotfolder.config.model import ComfyConfig
from hotfolder.config.servers import ServerConfig
from hotfolder.errors import ServerError
from hotfolder.retry import Backoff

log = structlog.get_logger()


class Server:
    def __init__(self, cfg: ServerConfig, comfy: ComfyConfig, stop: threading.Event) -> None:
        self.name = cfg.name
        self.url = cfg.url
        self.client = CountingClient(cfg.url, name=cfg.name, timeout=comfy.request_timeout,
                                     headers=cfg.headers, verify=cfg.verify,
                                     limits=TransferLimits(comfy.max_answer_bytes,
                                                           comfy.download_timeout,
                                                           comfy.min_download_rate))
        self.listener = CompletionListener(cfg.url, name=cfg.name, stop=stop,
                                           enabled=comfy.websocket,
                                           backoff_max=comfy.backoff_max,
                                           headers=cfg.headers, verify=cfg.verify,
                                           max_message_bytes=comfy.max_answer_bytes)
        if cfg.verify is False:
            log.warning("server.tls_unverified", server=cfg.name, url=cfg.url,
                        reason="servers[].verify is false: certificates are not checked, "
                               "anyone in the path can read and change the traffic")
        self.weight = cfg.weight
        self.tags = frozenset(cfg.tags)
        self.limit = cfg.max_in_flight or comfy.max_in_flight
        self.in_flight = 0
        self.downloading = 0  # downloads going on: at most `limit`, so a stuck server ties up
        self._downloads_lock = threading.Lock()  # no more workers than it has slots
        self.retired = False  # removed from the config: finishes its jobs, takes no new ones
        self.down_since: float | None = None
        self.up = True
        self.last_error = ""
        self.next_probe = 0.0
        # probes of a server that is down back off like every retry, spread by jitter
        self.probes = Backoff(comfy.backoff_initial, comfy.backoff_max, jitter=0.25).start()
        self.comebacks = 0  # times it answered again after being marked down
        # the models of the last prompt we sent it, until it may have restarted (its socket
        # dropped, or it was down): what it will have loaded when our next prompt starts
        self._models: tuple[tuple[int, int], frozenset[str]] | None = None
        # the models of the last job given one of its slots (reserved or acquired): queued
        # only once that job is claimed and prepared, yet what the server will run next, so
        # the scheduler pairs the following jobs with it, not with what it ran before
        self._next: tuple[tuple[int, int], frozenset[str] | None] | None = None
        self.model_switches = 0  # prompts of ours that needed other models than the last
        self.pending: dict[str, int] = {}  # our prompts on it -> their priority

    @property
    def models(self) -> frozenset[str] | None:
        """The models it has loaded, as far as we know (None: not known)."""
        known = self._models
        return known[1] if known is not None and known[0] == self._life else None

    @property
    def upcoming(self) -> frozenset[str] | None:
        """The models it will have loaded once the jobs given its slots have run (None: not
        known): what the scheduler matches waiting jobs with."""
        planned = self._next
        return planned[1] if planned is not None and planned[0] == self._life else self.models

    def loaded(self, models: frozenset[str]) -> None:
        self._models = (self._life, models)

    def given(self, models: frozenset[str] | None) -> None:
        """A slot was given to a job needing `models` (None: not known)."""
        self._next = (self._life, models)

    @property
    def _life(self) -> tuple[int, int]:
        return self.listener.drops, self.comebacks

    @property
    def load(self) -> tuple[float, int]:
        """Lower is less loaded: our prompts and other clients' work, by weight."""
        return _load(self)

    @property
    def epoch(self) -> tuple[str, int]:
        """Changes whenever the server may have restarted (so what was learnt of it, such as
        its node definitions, may be out of date): its WebSocket reconnected (a stopping
        ComfyUI drops every socket), or it answered again after being down."""
        return self.listener.client_id, self.comebacks

    def begin_download(self) -> bool:
        with self._downloads_lock:
            if self.downloading >= self.limit:
                return False
            self.downloading += 1
            return True

    def end_download(self) -> None:
        with self._downloads_lock:
            self.downloading -= 1


class Reservation:
    """A slot taken on a server for a job that is yet to be claimed and prepared: the job
    submits there (`take`), or the slot goes back (`cancel`) if it never gets that far."""

    def __init__(self, pool: ServerPool, server: Server) -> None:
        self.pool = pool
        self.server: Server | None = server
        self._lock = threading.Lock()

    def take(self) -> Server | None:
        with self._lock:
            server, self.server = self.server, None
        return server

    def cancel(self) -> None:
        server = self.take()
        if server is not None:
            self.pool.release(server)


class ServerPool:
    def __init__(self, servers: Sequence[ServerConfig], comfy: ComfyConfig,
                 stop: threading.Event, draining: threading.Event | None = None) -> None:
        self.comfy = comfy
        self.stop = stop
        self.draining = draining or threading.Event()
        self.servers = [Server(s, comfy, stop) for s in servers]
        self._cond = threading.Condition()
        self._started = False
        # called (outside the pool's lock) when a slot may have come free, with the lowest
        # priority that may take it (None: any job)
        self.on_free: Callable[[int | None], None] = lambda priority: None

    def by_name(self, name: str | None) -> Server | None:
        return next((s for s in self.servers if s.name == name), None)

    def start(self) -> None:
        self._started = True
        for server in self.servers:
            server.listener.start()

    def update(self, configs: Sequence[ServerConfig], comfy: ComfyConfig) -> dict[str, list[str]]:
        """Apply a reloaded config: new servers join, removed ones retire after their jobs."""
        wanted = {(c.name, c.url): c for c in configs}
        added, removed = [], []
        with self._cond:
            self.comfy = comfy
            for server in self.servers:
                cfg = wanted.pop((server.name, server.url), None)
                if cfg is None:
                    if not server.retired:
                        server.retired = True
                        removed.append(server.name)
                else:
                    server.retired = False
                    server.weight, server.tags = cfg.weight, frozenset(cfg.tags)
                    server.limit = cfg.max_in_flight or comfy.max_in_flight
            for cfg in wanted.values():
                server = Server(cfg, comfy, self.stop)
                self.servers.append(server)
                added.append(server.name)
                if self._started:
                    server.listener.start()
            self._cond.notify_all()
        self.on_free(None)
        return {"servers_added": added, "servers_removed": removed}

    def describe(self) -> list[dict[str, object]]:
        return [{"name": s.name, "url": s.url, "up": s.up, "in_flight": s.in_flight,
                 "queue_remaining": s.listener.queue_remaining, "last_error": s.last_error,
                 "tags": sorted(s.tags), "models": _listed(s.models),
                 "model_switches": s.model_switches}
                for s in self.servers if not s.retired or s.in_flight]

    def progress(self, server_name: str | None, prompt_id: str | None) -> dict[str, int] | None:
        server = self.by_name(server_name)
        if server is None or prompt_id is None:
            return None
        value = server.listener.progress(prompt_id)
        return {"step": value[0], "steps": value[1]} if value else None

    def close(self) -> None:
        for server in self.servers:
            server.listener.close()

    def eligible(self, tags: tuple[str, ...] = ()) -> list[Server]:
        """The servers a folder may use: all, or those carrying one of its tags."""
        return [s for s in self.servers
                if not s.retired and (not tags or s.tags.intersection(tags))]

    def acquire(self, tags: tuple[str, ...] = (),
                models: frozenset[str] | None = None) -> Server | None:
        """Block until an eligible server that is up has a free slot; None when stopping.

        A free server that has the job's `models` loaded wins; then the least loaded: our
        prompts there plus other clients' work (its `queue_remaining` beyond ours, from the
        WebSocket), divided by its weight.
        """
        with self._cond:
            while not self.stop.is_set() and not self.draining.is_set():
                free = [s for s in self.eligible(tags) if s.up and _has_room(s)]
                if free:
                    chosen = min(free, key=lambda s: (models is None or s.upcoming != models,
                                                      _load(s)))
                    chosen.in_flight += 1
                    chosen.given(models)
                    return chosen
                self._cond.wait(0.5)
        return None

    def free(self, priority: int | None = None
             ) -> tuple[list[tuple[Server, int | None]], list[frozenset[str] | None]]:
        """The servers that would take a prompt now (up, in the config), each with the lowest
        priority it takes: None with a slot free; above all our prompts there when its slots
        are full but its one slot for a rush job is not (`_rush_bar`). And, when any is
        free, the upcoming models of the other servers that are up. With `priority` (the
        highest of the jobs waiting), a rush slot it may not take counts as busy: with every
        slot taken, the answer is then empty, which is most of the times a scheduler asks in
        a backlog."""
        with self._cond:
            free, busy = [], []
            for s in self.servers:
                if s.retired or not s.up:
                    continue
                room = _has_room(s)
                bar = None if room else _rush_bar(s)
                if room or (bar is not None and (priority is None or priority >= bar)):
                    free.append((s, bar))
                else:
                    busy.append(s)
            return free, [s.upcoming for s in busy] if free else []

    def has_room(self, server: Server) -> bool:
        with self._cond:
            return _has_room(server)

    def reserve(self, server: Server, models: frozenset[str] | None = None,
                priority: int | None = None) -> Reservation | None:
        """A slot on `server` for a job about to be claimed (needing `models`), if it still
        has one, or, for a job of `priority` higher than all our prompts there, its rush
        slot."""
        with self._cond:
            if self.stop.is_set() or server.retired or not server.up:
                return None
            if not _has_room(server):
                bar = _rush_bar(server)
                if bar is None or priority is None or priority < bar:
                    return None
            server.in_flight += 1
            server.given(models)
        return Reservation(self, server)

    def queueing(self, server: Server, prompt_id: str, priority: int) -> bool:
        """Note a prompt about to be sent; True when it should go to the front of the
        server's queue, ahead of our prompts there of lower priority."""
        with self._cond:
            front = any(p < priority for p in server.pending.values())
            server.pending[prompt_id] = priority
            bar = _rush_bar(server)
        if bar is not None:  # every slot holder is now queued: a rush job may take the extra one
            self.on_free(bar)
        return front

    def queued(self, server: Server, models: frozenset[str]) -> bool | None:
        """A prompt loading `models` was queued on `server`: whether the server must load
        other models than the last prompt's (None: what it had loaded was not known)."""
        with self._cond:
            loaded = server.models
            switch = None if loaded is None else loaded != models
            server.model_switches += switch is True
            server.loaded(models)
        return switch

    def forget_prompt(self, server: Server, prompt_id: str) -> None:
        """Our prompt left the server's queue (finished, failed, cancelled, not sent)."""
        with self._cond:
            server.pending.pop(prompt_id, None)

    def others_up(self, server: Server, tags: tuple[str, ...] = ()) -> bool:
        return any(s.up for s in self.eligible(tags) if s is not server)

    def attach(self, server: Server) -> Server:
        """Count a prompt that is already on `server` (a resumed job) without waiting for a slot."""
        with self._cond:
            server.in_flight += 1
        return server

    def release(self, server: Server) -> None:
        with self._cond:
            server.in_flight = max(0, server.in_flight - 1)
            self._cond.notify_all()
        self.on_free(None)

    def mark_down(self, server: Server, error: ServerError) -> None:
        with self._cond:
            server.last_error = error.message
            if not server.up:
                return
            server.up = False
            server.down_since = time.monotonic()
            server.probes.reset()
            server.next_probe = time.monotonic() + server.probes.next_delay()
        log.warning("server.unreachable", server=server.name, url=server.url,
                    error=error.message,
                    action="jobs wait and are retried when it answers again")

    def mark_up(self, server: Server) -> None:
        with self._cond:
            was_down = not server.up
            server.comebacks += was_down
            server.up = True
            server.down_since = None
            server.last_error = ""
            self._cond.notify_all()
        if was_down:
            self.on_free(None)
            log.info("server.up", server=server.name, url=server.url)

    def probe(self, now: float | None = None) -> None:
        """Ask each down server whether it is back, with capped exponential backoff + jitter."""
        now = time.monotonic() if now is None else now
        for server in self.servers:
            if server.up or now < server.next_probe:
                continue
            if server.client.ping():
                self.mark_up(server)
            else:
                delay = server.probes.next_delay()
                server.next_probe = now + delay
                log.debug("server.still_down", server=server.name, retry_in=round(delay, 1))

    def check_all(self) -> list[Server]:
        """Ping every server once (at start); mark the silent ones down. Returns those up."""
        up = []
        for server in self.servers:
            try:
                server.client.queue_remaining()
            except ServerError as exc:
                self.mark_down(server, exc)
            else:
                up.append(server)
        return up


def _listed(models: frozenset[str] | None) -> list[str] | None:
    return None if models is None else sorted(models)


def _others(server: Server) -> int:
    """Prompts of other clients queued on the server (its queue beyond ours)."""
    return max(0, (server.listener.queue_remaining or 0) - server.in_flight)


def _has_room(server: Server) -> bool:
    """A free slot; a server kept busy by other clients gets one job of ours at a time."""
    if server.in_flight >= server.limit:
        return False
    return server.in_flight == 0 or server.in_flight + _others(server) < server.limit


def _rush_bar(server: Server) -> int | None:
    """The lowest priority that may take one slot beyond `max_in_flight` (submitted in front,
    it runs right after the prompt now running): above every prompt of ours there. None while
    that slot is taken, a slot is free, or a slot holder is not queued yet (its priority is
    not known here)."""
    if server.in_flight != server.limit or not server.pending:
        return None
    if len(server.pending) < server.in_flight:
        return None
    return max(server.pending.values()) + 1


def _load(server: Server) -> tuple[float, int]:
    return (server.in_flight + _others(server)) / server.weight, server.in_flight
