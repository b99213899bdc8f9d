"""Scheduling and fleet scenarios: model affinity, a priority rush, 32 servers at once.

The model-aware schedule and folder priorities are configured with keys a daemon without them
refuses (`schedule`, `folders[].priority`). Each run's config is generated with only the keys
that run needs; a run whose keys the daemon does not know is reported as "needs a daemon with
`schedule`" instead of failing, and the same command measures it once the daemon has them.
A first-come-first-served run falls back to a config without `schedule` (such a daemon is
first come, first served anyway) and says so.

Execution order, model loads and busy time come from the simulators' run logs
(`GET /sim/runs`), matched to jobs by the prompt id in each job's sidecar.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import (
    TEMPLATE,
    CpuMeter,
    Daemon,
    Sim,
    appeared,
    drop,
    drop_paced,
    job_name,
    outputs_done,
    prompt_text,
    read_json,
    sims,
    wait_until,
)
from runlog import busy_fraction, intervals, overtaking, steady_window
from scenarios import Result, Settings

CHECKPOINTS = ("sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors")
BOUNDS = {"max_reorder_seconds": 120, "max_overtaken": 20}  # the schedule's defaults


class NeedsNewerDaemon(Exception):
    """The daemon refused a key this run needs (exit 78, "unknown key")."""


@contextlib.contextmanager
def running(base: Path, urls: list[str], **kwargs: Any) -> Iterator[Daemon]:
    d = Daemon(base, urls, **kwargs)
    try:
        try:
            d.start()
        except RuntimeError as exc:
            if "unknown key" not in str(exc):
                raise
            refused = [line.strip() for line in str(exc).splitlines() if "unknown key" in line]
            raise NeedsNewerDaemon("; ".join(x.split(" (known")[0] for x in refused)) from exc
        yield d
    finally:
        d.stop()


def folder(base: Path, name: str, workflow: str, s: Settings, **keys: Any) -> dict[str, Any]:
    return {"name": name, "root": str(base / "hot" / name), "workflow": workflow,
            "settle_seconds": s.settle,
            "defaults": {"negative": "blurry, low quality", "seed": "random"}, **keys}


def checkpoint_templates(tmp: Path) -> dict[str, str]:
    """Two API workflows that differ only in `ckpt_name`: two models to switch between."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = {}
    for ckpt in CHECKPOINTS:
        graph = json.loads(TEMPLATE.read_text())
        graph["4"]["inputs"]["ckpt_name"] = ckpt
        name = ckpt.split("_")[2]  # base, refiner
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(graph, indent=1))
        out[name] = str(path)
    return out


def _runs_by_prompt(sim_list: list[Sim]) -> dict[str, dict[str, Any]]:
    out = {}
    for index, sim in enumerate(sim_list):
        for run in sim.runs()["runs"]:
            out[run["prompt_id"]] = {**run, "sim": index}
    return out


def _wait_runs(sim_list: list[Sim], count: int) -> None:
    """The run log is written just after the history entry, a moment after delivery can be."""
    wait_until(lambda: sum(x.stats()["prompts_executed"] for x in sim_list) >= count, 30,
               f"{count} runs in the simulators' logs", interval=0.05)


def _drop_jobs(jobs: list[tuple[Path, str]]) -> dict[str, float]:
    return {name: drop(inbox, name, prompt_text(i))
            for i, (inbox, name) in enumerate(jobs)}


def _sidecar_stats(sidecars: list[dict[str, Any]]) -> dict[str, Any]:
    """What the daemon itself says about model switches (sidecar key, once it writes one)."""
    if not any("model_switch" in car for car in sidecars):
        return {"sidecar_model_switches": None}
    return {"sidecar_model_switches": sum(bool(car.get("model_switch")) for car in sidecars)}


# -- affinity --------------------------------------------------------------------------------
def _affinity_run(tmp: Path, s: Settings, servers: int, policy: str) -> dict[str, Any]:
    job_s, load = s.affinity_job_seconds, s.model_load_seconds
    tag = f"{policy}-{servers}"
    workflows = checkpoint_templates(tmp / "workflows")
    names = list(workflows)
    base = tmp / f"{tag}-daemon"
    schedule = ({"schedule": "fifo"} if policy == "fifo"
                else {"schedule": {"policy": "models", **BOUNDS}})
    attempts = [schedule, {}] if policy == "fifo" else [schedule]
    with sims(tmp / f"{tag}-sims", servers, job_s, load) as sim_list:
        for extra in attempts:
            try:
                with running(base, [x.url for x in sim_list], settle=s.settle,
                             workflows=workflows, extra=extra,
                             folders=[folder(base, n, n, s) for n in names]) as d:
                    return {"schedule_config": extra.get("schedule", "(none: daemon without "
                                                                     "`schedule`)"),
                            **_affinity_measure(d, base, sim_list, names, s, servers)}
            except NeedsNewerDaemon:
                if extra is attempts[-1]:
                    raise
    raise AssertionError("unreachable")


def _affinity_measure(d: Daemon, base: Path, sim_list: list[Sim], names: list[str],
                      s: Settings, servers: int) -> dict[str, Any]:
    jobs, job_s, load = s.affinity_jobs, s.affinity_job_seconds, s.model_load_seconds
    roots = {n: base / "hot" / n for n in names}
    for root in roots.values():
        (root / "inbox").mkdir(parents=True, exist_ok=True)
    plan = [(roots[names[i % 2]] / "inbox", job_name(i)) for i in range(jobs)]
    meter = CpuMeter(d.proc.pid, [x.proc.pid for x in sim_list])
    dropped = _drop_jobs(plan)
    t0 = min(dropped.values())
    stems = {n: [job_name(i)[:-4] for i in range(jobs) if i % 2 == names.index(n)]
             for n in names}
    wait_until(lambda: all(outputs_done(roots[n] / "outbox", stems[n]) for n in names),
               jobs * (job_s + load) * 2 + 120, f"{jobs} outputs", interval=0.05)
    cpu = meter.stop()
    _wait_runs(sim_list, jobs)
    runs = _runs_by_prompt(sim_list)
    order, starts, sidecars, last = [], {}, [], 0.0
    for inbox, name in plan:
        outbox = inbox.parent / "outbox"
        car = read_json(outbox / f"{name[:-4]}.json")
        sidecars.append(car)
        order.append(name)
        starts[name] = runs[car["prompt_id"]]["started_at"]
        last = max(last, appeared(outbox / f"{name[:-4]}_00001.png"))
    wall = last - t0
    loads = [x.stats()["model_loads"] for x in sim_list]
    per_server_loads = 2 if servers == 1 else 1
    ideal = per_server_loads * load + jobs / servers * job_s
    def letters(which: list[str]) -> str:  # b or r per run, in the order they began
        return "".join("".join(names[CHECKPOINTS.index(m)][0] for m in runs[p]["models"])
                       for p in sorted(which, key=lambda p: runs[p]["started_at"]))
    return {"servers": servers, "jobs": jobs, "job_s": job_s, "model_load_s": load,
            "wall_s": round(wall, 3), "ideal_s": round(ideal, 3),
            "ratio_to_ideal": round(wall / ideal, 3), "model_loads": sum(loads),
            "model_loads_per_server": loads, **overtaking(order, starts),
            "run_order": letters(list(runs)),
            "run_order_per_server": [letters([p for p in runs if runs[p]["sim"] == i])
                                     for i in range(servers)],
            **_sidecar_stats(sidecars), "cpu": cpu,
            "daemon_problems": d.problems()}


def affinity(tmp: Path, s: Settings) -> Result:
    """40 jobs alternating between two checkpoints (3 s to load), 1 and 2 servers, FIFO and
    the model-aware schedule."""
    r = Result("affinity")
    for servers in (1, 2):
        for policy in ("fifo", "models"):
            key = f"{policy}_{servers}_server{'s' if servers > 1 else ''}"
            label = f"affinity {policy}, {servers} server{'s' if servers > 1 else ''}"
            try:
                x = _affinity_run(tmp, s, servers, policy)
            except NeedsNewerDaemon as exc:
                r.figures[key] = {"not_run": f"needs a daemon with `schedule` ({exc})"}
                r.check(label, "not run: needs a daemon with `schedule`", "-", None)
                continue
            r.figures[key] = x
            measured = (f"{x['wall_s']:.1f} s / ideal {x['ideal_s']:.1f} s = "
                        f"{x['ratio_to_ideal']:.2f}; {x['model_loads']} loads; overtaken ≤ "
                        f"{x['max_overtaken']} jobs, {x['max_overtaking_s']:.1f} s")
            if policy == "fifo":
                r.check(label, measured, "(baseline)", None)
            elif servers == 1:
                ok = (x["model_loads"] <= 4 and x["max_overtaken"] <= BOUNDS["max_overtaken"]
                      and x["max_overtaking_s"] <= BOUNDS["max_reorder_seconds"])
                r.check(label, measured, "≤ 4 loads, overtaken ≤ 20 jobs / 120 s", ok)
            else:
                r.check(label, measured, "≤ 1.2 × ideal", x["ratio_to_ideal"] <= 1.2)
    return r


# -- priority --------------------------------------------------------------------------------
def _priority_run(tmp: Path, s: Settings, rush_keys: dict[str, Any], tag: str) -> dict[str, Any]:
    waiting, job_s = s.priority_waiting, s.priority_job_seconds
    base = tmp / f"{tag}-daemon"
    with sims(tmp / f"{tag}-sim", 1, job_s) as sim_list, \
            running(base, [sim_list[0].url], settle=s.settle,
                    folders=[folder(base, "normal", "sdxl", s),
                             folder(base, "rush", "sdxl", s, **rush_keys)]) as d:
        normal, rush = base / "hot" / "normal", base / "hot" / "rush"
        for root in (normal, rush):
            (root / "inbox").mkdir(parents=True, exist_ok=True)
        # one to run and `waiting` behind it when the rush job comes
        _drop_jobs([(normal / "inbox", job_name(i)) for i in range(waiting + 1)])
        wait_until(lambda: sim_list[0].stats()["prompts_received"] >= 1, 60,
                   "the first job to reach the server", interval=0.01)
        rush_dropped = drop(rush / "inbox", "rush.txt", "the rush job: a lighthouse at dawn")
        stems = [job_name(i)[:-4] for i in range(waiting + 1)]
        wait_until(lambda: outputs_done(rush / "outbox", ["rush"])
                   and outputs_done(normal / "outbox", stems),
                   (waiting + 2) * job_s * 3 + 60, "every output", interval=0.05)
        _wait_runs(sim_list, waiting + 2)
        runs = _runs_by_prompt(sim_list)
        started = runs[read_json(rush / "outbox" / "rush.json")["prompt_id"]]["started_at"]
        before = sum(1 for stem in stems
                     if rush_dropped < runs[read_json(normal / "outbox" / f"{stem}.json")[
                         "prompt_id"]]["started_at"] < started)
        return {"waiting_jobs": waiting, "job_s": job_s, "rush_folder": rush_keys,
                "drop_to_start_s": round(started - rush_dropped, 3),
                "drop_to_start_jobs": round((started - rush_dropped) / job_s, 2),
                "jobs_started_between": before, "daemon_problems": d.problems()}


def priority(tmp: Path, s: Settings) -> Result:
    """30 jobs waiting on one server, then one dropped into a folder with `priority: 10`."""
    r = Result("priority")
    for tag, keys in (("plain", {}), ("priority", {"priority": 10})):
        label = f"priority: rush job {'with priority: 10' if keys else 'without priority'}, " \
                "drop → start"
        try:
            x = _priority_run(tmp, s, keys, tag)
        except NeedsNewerDaemon as exc:
            r.figures[tag] = {"not_run": f"needs a daemon with folder priorities ({exc})"}
            r.check(label, "not run: needs a daemon with `priority`", "-", None)
            continue
        r.figures[tag] = x
        measured = (f"{x['drop_to_start_s']:.2f} s = {x['drop_to_start_jobs']:.2f} job times "
                    f"({x['jobs_started_between']} jobs started before it)")
        if keys:
            r.check(label, measured, "≤ 1 job time", x["drop_to_start_jobs"] <= 1)
        else:
            r.check(label, measured, "(baseline)", None)
    return r


# -- fleet -----------------------------------------------------------------------------------
def fleet(tmp: Path, s: Settings) -> Result:
    """One daemon, many servers, long jobs dropped a little faster than the servers' combined
    rate: a backlog builds, so a server waiting for work means the daemon was late, not that
    no job was there yet."""
    r = Result("fleet")
    n, jobs, job_s = s.fleet_servers, s.fleet_jobs, s.fleet_job_seconds
    rate = n / job_s * s.fleet_overload
    stems = [job_name(i)[:-4] for i in range(jobs)]
    base = tmp / "fleet-daemon"
    with sims(tmp / "fleet-sims", n, job_s) as sim_list, \
            running(base, [x.url for x in sim_list], settle=s.settle) as d:
        inbox, outbox = d.dir("inbox"), d.dir("outbox")
        meter = CpuMeter(d.proc.pid, [x.proc.pid for x in sim_list])
        t0 = drop_paced(inbox, jobs, rate)
        # counting names is cheap enough to repeat; each file is checked once at the end
        wait_until(lambda: len(os.listdir(outbox)) >= 2 * jobs and outputs_done(outbox, stems),
                   jobs / rate * 2 + 120, f"{jobs} outputs", interval=0.2)
        cpu = meter.stop()
        _wait_runs(sim_list, jobs)
        per_server = [intervals(x.runs()) for x in sim_list]
        problems = d.problems()
    usage = d.usage
    begin, end = steady_window(per_server)
    busy = [busy_fraction(runs, begin, end) for runs in per_server]
    cpu_run, cpu_total = cpu["daemon_cpu_s"], usage.ru_utime + usage.ru_stime
    wall = max(stop for runs in per_server for _, stop in runs) - t0
    r.figures = {
        "servers": n, "jobs": jobs, "job_s": job_s, "offered_jobs_per_s": rate,
        "wall_s": round(wall, 2), "steady_window_s": [round(begin - t0, 2), round(end - t0, 2)],
        "busy_fraction_per_server": [round(b, 4) for b in busy],
        "runs_per_server": [len(x) for x in per_server],
        "daemon_cpu_run_s": round(cpu_run, 3), "daemon_cpu_total_s": round(cpu_total, 3),
        "cpu_ms_per_job_run": round(cpu_run / jobs * 1000, 2),
        "cpu_ms_per_job_total": round(cpu_total / jobs * 1000, 2),
        "sims_cpu_ms_per_job": round(cpu["sims_cpu_s"] / jobs * 1000, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "cpu": cpu,
        "daemon_problems": problems}
    r.check(f"fleet {n} servers, {jobs} × {job_s:g} s: least busy server over the steady part",
            f"{min(busy):.1%} (median {sorted(busy)[len(busy) // 2]:.1%}) of "
            f"{end - begin:.0f} s", "≥ 95 %", min(busy) >= 0.95)
    r.check("  daemon CPU per job (during the run; whole life)",
            f"{cpu_run / jobs * 1000:.2f} ms; {cpu_total / jobs * 1000:.2f} ms", "< 10 ms",
            cpu_run / jobs < 0.010)
    r.check("  machine load during the run (cores busy: all; simulators; others)",
            f"{cpu['machine_busy_cores']:.2f} of {cpu['cores']}; {cpu['sims_cpu_s'] / wall:.2f};"
            f" {cpu['other_processes_cores']:.2f}", "(info)", None)
    return r


SCHED_SCENARIOS = {"affinity": affinity, "priority": priority, "fleet": fleet}
