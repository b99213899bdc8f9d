"""The scheduler's choice (daemon/schedule.py): priority, then models, then drop order, within
the fairness bounds; `fifo` keeps drop order."""

from __future__ import annotations

import itertools

from hotfolder.config.model import ScheduleConfig
from hotfolder.daemon.schedule import FreeServer, Queue, Waiting

SDXL = frozenset({"sd_xl_base_1.0.safetensors"})
FLUX = frozenset({"flux1-dev.safetensors", "t5xxl_fp16.safetensors", "clip_l.safetensors"})
UPSCALE = frozenset({"RealESRGAN_x4plus.pth"})


def queue(**config) -> Queue:
    return Queue(ScheduleConfig(**config))


def job(name: str, models=SDXL, priority: int = 0, tags: tuple[str, ...] = (),
        ready_at: float = 0.0) -> Waiting:
    return Waiting(priority=priority, models=models, tags=tags, ready_at=ready_at, item=name)


def server(name: str, models=None, load: float = 0.0, tags=()) -> FreeServer:
    return FreeServer(name=name, tags=frozenset(tags), models=models, load=(load, 0))


def drain(q: Queue, servers: list[FreeServer], now: float = 1.0) -> list[tuple[str, str]]:
    """Take every job, each server keeping the models of the last job it took (one slot)."""
    loaded = {s.name: s for s in servers}
    order = []
    while len(q):
        chosen = q.choose(list(loaded.values()), now)
        assert chosen is not None
        waiting, free = chosen
        q.remove(waiting)
        order.append((waiting.item, free.name))
        loaded[free.name] = FreeServer(free.name, free.tags, waiting.models, free.load)
    return order


def test_a_free_server_takes_the_waiting_job_that_matches_its_models():
    q = queue()
    for name, models in [("a1", SDXL), ("f1", FLUX), ("a2", SDXL), ("f2", FLUX)]:
        q.add(job(name, models))
    chosen = q.choose([server("gpu", FLUX)], now=1.0)
    assert chosen is not None and chosen[0].item == "f1"
    assert [name for name, _ in drain(q, [server("gpu", FLUX)])] == ["f1", "f2", "a1", "a2"]


def test_a_job_goes_to_the_free_server_that_has_its_models():
    q = queue()
    q.add(job("f1", FLUX))
    busy_but_matching = server("b", FLUX, load=1.0)
    chosen = q.choose([server("a", SDXL, load=0.0), busy_but_matching], now=1.0)
    assert chosen is not None and chosen[1].name == "b"


def test_among_matching_servers_the_least_loaded_wins():
    q = queue()
    q.add(job("a1", SDXL))
    chosen = q.choose([server("x", SDXL, 2.0), server("y", SDXL, 0.5), server("z", FLUX, 0.0)],
                      now=1.0)
    assert chosen is not None and chosen[1].name == "y"


def test_no_match_takes_drop_order_and_spares_servers_other_jobs_want():
    q = queue()
    q.add(job("u1", UPSCALE))
    q.add(job("a1", SDXL))
    # the flux server is wanted by nobody; the sdxl one is wanted by a1
    chosen = q.choose([server("sdxl-box", SDXL, 0.0), server("flux-box", FLUX, 1.0)], now=1.0)
    assert chosen is not None
    assert (chosen[0].item, chosen[1].name) in {("a1", "sdxl-box"), ("u1", "flux-box")}
    assert chosen[0].item == "a1"  # a match goes first


def test_unknown_models_are_scheduled_by_drop_order():
    q = queue()
    q.add(job("x", None))
    q.add(job("y", None))
    assert [n for n, _ in drain(q, [server("gpu", SDXL)])] == ["x", "y"]


def test_alternating_drops_need_one_switch_with_models_and_all_with_fifo():
    def switches(policy: str) -> tuple[list[str], int]:
        q = queue(policy=policy)
        for i in range(10):
            q.add(job(f"{'af'[i % 2]}{i}", SDXL if i % 2 == 0 else FLUX))
        order = [n for n, _ in drain(q, [server("gpu")])]
        return order, sum(1 for a, b in itertools.pairwise(order) if a[0] != b[0])

    order, changes = switches("models")
    assert changes == 1
    order, changes = switches("fifo")
    assert order == [f"{'af'[i % 2]}{i}" for i in range(10)]
    assert changes == 9


def test_priority_goes_first_across_folders_and_beats_models():
    q = queue()
    q.add(job("a1", SDXL))
    q.add(job("a2", SDXL))
    q.add(job("rush", FLUX, priority=5))
    q.add(job("low", SDXL, priority=-1))
    order = [n for n, _ in drain(q, [server("gpu", SDXL)])]
    assert order == ["rush", "a1", "a2", "low"]


def test_fifo_still_orders_by_priority():
    q = queue(policy="fifo")
    q.add(job("a1"))
    q.add(job("rush", FLUX, priority=3))
    assert [n for n, _ in drain(q, [server("gpu", FLUX)])] == ["rush", "a1"]


def test_fifo_takes_the_least_loaded_server_whatever_it_has_loaded():
    q = queue(policy="fifo")
    q.add(job("a1", SDXL))
    chosen = q.choose([server("x", SDXL, 1.0), server("y", FLUX, 0.0)], now=1.0)
    assert chosen is not None and chosen[1].name == "y"


def test_no_job_is_overtaken_by_more_than_max_overtaken():
    q = queue(max_overtaken=3)
    q.add(job("old", FLUX))
    for i in range(10):
        q.add(job(f"a{i}", SDXL))
    order = [n for n, _ in drain(q, [server("gpu", SDXL)])]
    assert order.index("old") == 3


def test_the_overtaken_count_holds_for_every_job_of_a_group():
    q = queue(max_overtaken=2)
    for i in range(3):
        q.add(job(f"f{i}", FLUX))
    for i in range(8):
        q.add(job(f"a{i}", SDXL))
    order = [n for n, _ in drain(q, [server("gpu", SDXL)])]
    # each flux job is overtaken by at most 2 later jobs: the sdxl ones can only run ahead
    # of the first flux job twice, then the flux jobs (now matching) go together
    assert order[:5] == ["a0", "a1", "f0", "f1", "f2"]
    for name in ("f0", "f1", "f2"):
        later = [n for n in order[:order.index(name)] if n.startswith("a")]
        assert len(later) <= 2


def test_a_job_ready_longer_than_max_reorder_seconds_goes_next_regardless_of_models():
    q = queue(max_reorder_seconds=60)
    q.add(job("old", FLUX, ready_at=0.0))
    q.add(job("new", SDXL, ready_at=50.0))
    chosen = q.choose([server("gpu", SDXL)], now=59.0)
    assert chosen is not None and chosen[0].item == "new"
    chosen = q.choose([server("gpu", SDXL)], now=60.0)
    assert chosen is not None and chosen[0].item == "old"


def test_overdue_jobs_go_in_drop_order_and_prefer_their_own_models_server():
    q = queue(max_reorder_seconds=10)
    q.add(job("f", FLUX, ready_at=0.0))
    q.add(job("a", SDXL, ready_at=1.0))
    chosen = q.choose([server("s", SDXL), server("t", FLUX, load=5.0)], now=100.0)
    assert chosen is not None and (chosen[0].item, chosen[1].name) == ("f", "t")


def test_the_bounds_do_not_override_priority():
    q = queue(max_overtaken=1, max_reorder_seconds=1)
    q.add(job("low", SDXL, priority=0, ready_at=0.0))
    for i in range(3):
        q.add(job(f"hi{i}", FLUX, priority=1, ready_at=0.0))
    assert [n for n, _ in drain(q, [server("gpu", SDXL)], now=100.0)][-1] == "low"


def test_tags_restrict_the_servers_a_job_may_take():
    q = queue()
    q.add(job("big", SDXL, tags=("big",)))
    q.add(job("any", FLUX))
    assert q.choose([server("small", SDXL)], now=1.0)[0].item == "any"
    chosen = q.choose([server("small", SDXL), server("large", FLUX, tags=("big",))], now=1.0)
    assert chosen is not None and (chosen[0].item, chosen[1].name) in {("any", "large")}


def test_nothing_to_choose():
    q = queue()
    assert q.choose([server("gpu")], now=0.0) is None
    q.add(job("pinned", tags=("big",)))
    assert q.choose([server("gpu")], now=0.0) is None
    assert q.choose([], now=0.0) is None


def test_take_all_returns_every_job_in_drop_order():
    q = queue()
    for name, models in [("a", SDXL), ("b", FLUX), ("c", SDXL)]:
        q.add(job(name, models))
    assert [j.item for j in q.take_all()] == ["a", "b", "c"]
    assert len(q) == 0


def test_many_waiting_jobs_cost_a_choice_per_group_not_per_job():
    q = queue()
    for i in range(20_000):
        q.add(job(f"j{i}", SDXL if i % 2 else FLUX))
    servers = [server(f"gpu{i}", SDXL if i % 2 else FLUX) for i in range(32)]
    for _ in range(2_000):
        waiting, _free = q.choose(servers, now=1.0)
        q.remove(waiting)
    assert len(q) == 18_000
    assert sum(len(v) for v in q._taken.values()) <= 20_000


def test_idle_servers_spread_over_the_model_groups_waiting():
    # the first folder's jobs became ready first; a server given one of them is busy with it
    q = queue()
    for name, models in [("r0", FLUX), ("r1", FLUX), ("r2", FLUX), ("b0", SDXL), ("b1", SDXL)]:
        q.add(job(name, models))
    waiting, a = q.choose([server("a"), server("b")], now=1.0)
    assert (waiting.item, a.name) == ("r0", "a")
    q.remove(waiting)
    # a's slots are full, flux coming up there: b takes the other checkpoint, not r1
    waiting, b = q.choose([server("b")], now=1.0, busy=[FLUX])
    assert (waiting.item, b.name) == ("b0", "b")


def test_a_server_whose_models_another_has_too_goes_over_to_an_unserved_group():
    q = queue()
    for name, models in [("r0", FLUX), ("b0", SDXL)]:
        q.add(job(name, models))
    chosen = q.choose([server("a", FLUX)], now=1.0, busy=[FLUX])
    assert chosen is not None and chosen[0].item == "b0"
    # the only server with its models keeps them
    chosen = q.choose([server("a", FLUX)], now=1.0, busy=[SDXL])
    assert chosen is not None and chosen[0].item == "r0"


def test_a_full_servers_rush_slot_takes_only_a_higher_priority():
    q = queue()
    q.add(job("a1", SDXL))
    rush_slot = FreeServer(name="gpu", models=SDXL, min_priority=1)
    assert q.choose([rush_slot], now=1.0) is None
    q.add(job("rush", FLUX, priority=1))
    chosen = q.choose([rush_slot], now=1.0)
    assert chosen is not None and chosen[0].item == "rush"


def test_a_model_load_waits_for_jobs_ready_moments_later_then_each_server_takes_one_group():
    """Two folders' files dropped together become ready a tick apart: a choice at the first
    would put both idle servers on its models, each to switch again once the second's come."""
    q = queue(switch_wait_seconds=0.25)
    q.add(job("b1", SDXL, ready_at=10.0))
    q.add(job("b2", SDXL, ready_at=10.0))
    idle = [server("a"), server("b")]
    assert q.choose(idle, now=10.01) is None
    assert q.hold_until == 10.25
    q.add(job("f1", FLUX, ready_at=10.1))
    q.add(job("f2", FLUX, ready_at=10.1))
    first = q.choose(idle, now=10.25)
    assert first is not None and q.hold_until is None
    q.remove(first[0])
    loaded = {first[1].name: first[0].models}
    other = next(s for s in idle if s.name != first[1].name)
    second = q.choose([other], now=10.26, busy=list(loaded.values()))
    assert second is not None
    assert {first[0].models, second[0].models} == {SDXL, FLUX}


def test_a_job_its_server_has_the_models_for_never_waits():
    q = queue(switch_wait_seconds=5)
    q.add(job("b1", SDXL, ready_at=10.0))
    chosen = q.choose([server("a", SDXL)], now=10.0)
    assert chosen is not None and chosen[0].item == "b1"


def test_the_load_wait_gives_way_to_the_fairness_bound_and_to_fifo():
    q = queue(switch_wait_seconds=5, max_reorder_seconds=1)
    q.add(job("b1", SDXL, ready_at=10.0))
    assert q.choose([server("a", FLUX)], now=10.5) is None and q.hold_until == 15.0
    assert q.choose([server("a", FLUX)], now=11.0) is not None  # overdue: no more waiting
    q = queue(policy="fifo", switch_wait_seconds=5)
    q.add(job("b1", SDXL, ready_at=10.0))
    assert q.choose([server("a", FLUX)], now=10.0) is not None


def test_top_priority_is_the_highest_waiting_and_none_when_empty():
    q = queue()
    assert q.top_priority() is None
    low, rush = q.add(job("a", priority=0)), q.add(job("b", FLUX, priority=5))
    assert q.top_priority() == 5
    q.remove(rush)
    assert q.top_priority() == 0
    q.remove(low)
    assert q.top_priority() is None
