"""Which waiting job a free server takes: priority first, then the models it has loaded, then
drop order, within bounds that keep every job from waiting for long.

On a GPU the costly step between two jobs is loading a different model, so a server that has
an SDXL checkpoint loaded should take the next SDXL job even when a Flux job was dropped
before it. That reordering is bounded: a job ready for `max_reorder_seconds`, or overtaken by
`max_overtaken` later jobs of its priority, goes next regardless of models. `fifo` takes jobs
by priority and drop order only (and servers least loaded first, as without a scheduler).

A server is committed to a model load only once the oldest job waiting has been ready
`switch_wait_seconds`: files dropped together become ready a tick or two apart (one folder's
before another's), and a choice made at the first of them would put every idle server on
that folder's models, each to switch again later. A job that its server already has the
models for never waits.

This module is the choice alone, without threads, clocks or files (daemon/dispatch.py feeds
it). Waiting jobs are kept in groups of equal (priority, server tags, models), each in drop
order, so a choice costs O(groups x free servers), never O(waiting jobs): within a group the
oldest job is the one waiting longest and overtaken most, so only the groups' heads are looked
at.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hotfolder.config.model import ScheduleConfig

Models = frozenset[str] | None  # None: not known
GroupKey = tuple[int, tuple[str, ...], Models]


@dataclass
class Waiting:
    """A job ready in an inbox, not yet claimed."""

    priority: int
    models: Models
    tags: tuple[str, ...]  # the folder's server_tags: only servers with one of them
    ready_at: float
    item: Any = None  # what the caller hands on when the job is chosen
    seq: int = 0  # drop (ready) order, set by the queue


@dataclass(frozen=True)
class FreeServer:
    """A server with a free slot, as the choice sees it."""

    name: str
    tags: frozenset[str] = frozenset()
    models: Models = None  # what it has loaded, as far as we know
    load: tuple[float, int] = (0.0, 0)  # lower is less loaded (comfy/pool.py)
    # its slots are full: only a job of this priority or higher may take its rush slot
    min_priority: int | None = None


def eligible(job: Waiting, server: FreeServer) -> bool:
    if server.min_priority is not None and job.priority < server.min_priority:
        return False
    return not job.tags or not server.tags.isdisjoint(job.tags)


@dataclass
class Queue:
    """The waiting jobs, and what the fairness bounds need to know of the jobs that left."""

    config: ScheduleConfig = field(default_factory=ScheduleConfig)
    _groups: dict[GroupKey, deque[Waiting]] = field(default_factory=dict)
    # per priority: seqs of the jobs taken that a waiting job of that priority may have been
    # overtaken by (those above the oldest waiting seq), in order
    _taken: dict[int, list[int]] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _count: int = 0
    # set by `choose` when it held a model load back: when to choose again
    hold_until: float | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, job: Waiting) -> Waiting:
        job.seq = next(self._seq)
        self._groups.setdefault((job.priority, job.tags, job.models), deque()).append(job)
        self._count += 1
        return job

    def top_priority(self) -> int | None:
        """The highest priority waiting (None: nothing waits)."""
        return max((key[0] for key in self._groups), default=None)

    def take_all(self) -> list[Waiting]:
        """Every waiting job, oldest first (the daemon is stopping: they stay in the inbox)."""
        jobs = sorted((j for g in self._groups.values() for j in g), key=lambda j: j.seq)
        self._groups.clear()
        self._taken.clear()
        self._count = 0
        return jobs

    def overtaken(self, job: Waiting) -> int:
        """How many jobs of its priority that became ready after it have been taken."""
        taken = self._taken.get(job.priority, [])
        return len(taken) - bisect.bisect_right(taken, job.seq)

    def overdue(self, job: Waiting, now: float) -> bool:
        return (now - job.ready_at >= self.config.max_reorder_seconds
                or self.overtaken(job) >= self.config.max_overtaken)

    def choose(self, free: list[FreeServer], now: float,
               busy: Iterable[Models] = ()) -> tuple[Waiting, FreeServer] | None:
        """The next pairing of a waiting job and a free server, or None; nothing is removed
        (`remove` does that once the server's slot is really had). `busy`: the models of the
        servers without a free slot (what they will have loaded)."""
        self.hold_until = None
        chosen = self._choose(free, now, busy)
        if chosen is None or self.config.policy == "fifo":
            return chosen
        job, server = chosen
        # jobs gather from the moment the oldest one waiting became ready
        gathered_at = min(g[0].ready_at for g in self._groups.values())
        gathered_at += self.config.switch_wait_seconds
        if (job.models is not None and server.models != job.models and now < gathered_at
                and not self.overdue(job, now)):
            self.hold_until = gathered_at
            return None
        return chosen

    def _choose(self, free: list[FreeServer], now: float,
                busy: Iterable[Models]) -> tuple[Waiting, FreeServer] | None:
        heads = [g[0] for g in self._groups.values()]
        usable = [(j, [s for s in free if eligible(j, s)]) for j in heads]
        usable = [(j, servers) for j, servers in usable if servers]
        if not usable:
            return None
        top = max(j.priority for j, _ in usable)
        usable = [(j, servers) for j, servers in usable if j.priority == top]
        late = [(j, servers) for j, servers in usable if self.overdue(j, now)]
        if late or self.config.policy == "fifo":
            job, servers = min(late or usable, key=lambda c: c[0].seq)
            if self.config.policy == "fifo":
                return job, min(servers, key=lambda s: s.load)
            return job, _best_server(job, servers, set())
        wanted = {j.models for j, _ in usable if j.models is not None}
        # models waiting jobs need that no server has or is about to have: a free server
        # that is not the only one with its models (or has none known, or none wanted) goes
        # over to them, so that model groups spread over the servers instead of every server
        # running the group that came first, then every server switching
        served = Counter([*(s.models for s in free), *busy])
        spare = {s.name for s in free
                 if s.models is None or served[s.models] > 1 or s.models not in wanted}
        unserved = [(j, [s for s in servers if s.name in spare]) for j, servers in usable
                    if j.models is not None and not served[j.models]]
        unserved = [(j, servers) for j, servers in unserved if servers]
        kept = {s.name for _, servers in unserved for s in servers}
        matches = [(j, s) for j, servers in usable if j.models is not None
                   for s in servers if s.models == j.models and s.name not in kept]
        if matches:
            job = min(matches, key=lambda c: c[0].seq)[0]
            return job, min((s for j, s in matches if j is job), key=lambda s: s.load)
        if unserved:
            job, servers = min(unserved, key=lambda c: c[0].seq)
            return job, _best_server(job, servers, wanted)
        job, servers = min(usable, key=lambda c: c[0].seq)
        # keep servers whose models other waiting jobs want for those jobs
        return job, _best_server(job, servers, wanted)

    def remove(self, job: Waiting) -> None:
        """Take the chosen job (the head of its group) out, counting whom it overtook."""
        key = (job.priority, job.tags, job.models)
        group = self._groups[key]
        assert group[0] is job
        group.popleft()
        if not group:
            del self._groups[key]
        self._count -= 1
        oldest = min((g[0].seq for k, g in self._groups.items() if k[0] == job.priority),
                     default=None)
        taken = self._taken.setdefault(job.priority, [])
        if oldest is not None and oldest < job.seq:
            bisect.insort(taken, job.seq)  # it overtook the older jobs still waiting
        # only the jobs taken after the oldest one waiting became ready can have overtaken
        del taken[:len(taken) if oldest is None else bisect.bisect_left(taken, oldest)]
        if not taken:
            del self._taken[job.priority]


def _best_server(job: Waiting, servers: list[FreeServer],
                 wanted: set[frozenset[str]]) -> FreeServer:
    """The job's own models loaded first; then a server whose models no waiting job wants;
    then the least loaded."""
    return min(servers, key=lambda s: (job.models is None or s.models != job.models,
                                       s.models in wanted, s.load))
