"""The five benchmark scenarios. Each returns figures plus (what, measured, target, ok) checks.

All times are wall-clock epoch seconds taken on this machine: drop times by the benchmark, the
moment an output got its final name from the file's ctime (hotfolder links finished files into
place, the tutorial client writes them), execution times from the simulator's own history
timestamps, submission times from the daemon's `job.submitted` log events.
"""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    CpuMeter,
    Daemon,
    appeared,
    daemon,
    drop,
    drop_paced,
    iso_epoch,
    job_name,
    log_time,
    message_times,
    outputs_done,
    percentile,
    prompt_text,
    read_json,
    sims,
    stop_process,
    wait_until,
)

HERE = Path(__file__).resolve().parent


@dataclass
class Settings:
    """Loads per scenario: the issue's full sizes by default, shrunk by `--quick`."""

    quick: bool
    settle: float = 1.0
    job_seconds: float = 0.25
    batch_jobs: int = 40
    fanout_servers: int = 8
    fanout_jobs: int = 400
    latency_jobs: int = 40
    latency_spacing: float = 0.3
    arrival_renames: int = 40
    arrival_copies: int = 10
    arrival_big_mib: int = 50
    arrival_chunked: int = 5
    scale_jobs: int = 10_000
    scale_job_seconds: float = 0.001
    idle_seconds: float = 60.0
    affinity_jobs: int = 40
    affinity_job_seconds: float = 0.3
    model_load_seconds: float = 3.0
    priority_waiting: int = 30
    priority_job_seconds: float = 0.3
    fleet_servers: int = 32
    fleet_jobs: int = 2000
    fleet_job_seconds: float = 2.0
    fleet_overload: float = 1.25  # jobs are offered at this × the servers' combined rate
    cache: dict[str, Any] = field(default_factory=dict)  # results reused across scenarios


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def check(self, what: str, measured: str, target: str, ok: bool | None) -> None:
        self.checks.append({"what": what, "measured": measured, "target": target, "ok": ok})


def _wait_outputs(outbox: Path, stems: list[str], timeout: float) -> None:
    wait_until(lambda: outputs_done(outbox, stems), timeout, f"{len(stems)} outputs in {outbox}",
               interval=0.05)


def _last_png(outbox: Path, stems: list[str]) -> float:
    """When the last output appeared: the end of a batch as a user would see it."""
    return max(appeared(outbox / f"{stem}_00001.png") for stem in stems)


def daemon_batch(tmp: Path, s: Settings, servers: int, jobs: int, tag: str) -> dict[str, Any]:
    """Drop `jobs` files at once into a running daemon; wall time to the last output."""
    stems = [job_name(i)[:-4] for i in range(jobs)]
    with sims(tmp / f"{tag}-sims", servers, s.job_seconds) as sim_list, \
            daemon(tmp / f"{tag}-daemon", [x.url for x in sim_list], settle=s.settle) as d:
        inbox = d.dir("inbox")
        meter = CpuMeter(d.proc.pid, [x.proc.pid for x in sim_list])
        t0 = time.time()
        for i in range(jobs):
            drop(inbox, job_name(i), prompt_text(i))
        _wait_outputs(d.dir("outbox"), stems, jobs * s.job_seconds * 4 + 60)
        cpu = meter.stop()
        last = _last_png(d.dir("outbox"), stems)
        stats = [x.stats() for x in sim_list]
        submits = [log_time(e) for e in d.events("job.submitted")]
        per_server: dict[str, int] = {}
        for stem in stems:
            server = read_json(d.dir("outbox") / f"{stem}.json").get("server", "?")
            per_server[server] = per_server.get(server, 0) + 1
        wall, steady = last - t0, last - min(submits)
        return {
            "jobs": jobs, "servers": servers, "wall_s": round(wall, 3),
            "first_submit_after_drop_s": round(min(submits) - t0, 3),
            "steady_s": round(steady, 3), "throughput_jobs_per_s": round(jobs / wall, 3),
            "steady_throughput_jobs_per_s": round(jobs / steady, 3),
            "sim_busy_s": [round(x["busy_seconds"], 3) for x in stats],
            "sim_idle_gaps": [x["idle_gaps"] for x in stats],
            "jobs_per_server": per_server, "cpu": cpu, "daemon_problems": d.problems(),
        }


def tutorial_batch(tmp: Path, s: Settings, jobs: int) -> dict[str, Any]:
    """The same drop against `tutorial_client.py`, started (and watching) before the drop."""
    stems = [job_name(i)[:-4] for i in range(jobs)]
    folder = tmp / "tutorial"
    folder.mkdir(parents=True)
    with sims(tmp / "tutorial-sim", 1, s.job_seconds) as (sim,), \
            open(folder / "client.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "tutorial_client.py"), "--server", sim.url,
             "--folder", str(folder), "--exit-after", str(jobs)], stdout=log, stderr=log)
        try:
            wait_until(lambda: b"watching" in (folder / "client.log").read_bytes(), 30,
                       "the tutorial client to start")
            t0 = time.time()
            for i in range(jobs):
                drop(folder / "inbox", job_name(i), prompt_text(i))
            _wait_outputs_tutorial(folder / "outbox", stems, jobs * (s.job_seconds + 2) + 60)
            wall = _last_png(folder / "outbox", stems) - t0
            busy = sim.stats()["busy_seconds"]
        finally:
            stop_process(proc, grace=5)
    return {"jobs": jobs, "wall_s": round(wall, 3), "throughput_jobs_per_s": round(jobs / wall, 3),
            "sim_busy_s": round(busy, 3), "gpu_busy_fraction": round(busy / wall, 3)}


def _wait_outputs_tutorial(outbox: Path, stems: list[str], timeout: float) -> None:
    wait_until(lambda: all((outbox / f"{x}_00001.png").exists() for x in stems), timeout,
               "the tutorial client's outputs", interval=0.05)


def single_server(tmp: Path, s: Settings) -> Result:
    """Scenario 1: one server, a batch dropped at once, against the tutorial client."""
    r = Result("single")
    one = daemon_batch(tmp, s, 1, s.batch_jobs, "single")
    s.cache["single"] = one
    tut = tutorial_batch(tmp, s, s.batch_jobs)
    ideal = s.batch_jobs * s.job_seconds
    floor = one["sim_busy_s"][0]  # what the simulator itself spent: no settle allowance
    speedup = tut["wall_s"] / one["wall_s"]
    gpu = s.batch_jobs * s.job_seconds
    r.figures = {"hotfolder": one, "tutorial": tut, "ideal_s": round(ideal, 3),
                 "ratio_to_ideal": round(one["wall_s"] / ideal, 3),
                 "sim_floor_s": round(floor, 3),
                 "ratio_to_sim_floor": round(one["wall_s"] / floor, 3),
                 "tutorial_ideal_s": gpu, "tutorial_ratio_to_ideal": round(tut["wall_s"] / gpu, 3),
                 "speedup_vs_tutorial": round(speedup, 2)}
    r.check(f"1 server, {s.batch_jobs}×{s.job_seconds:g} s renamed in: wall / simulator floor",
            f"{one['wall_s']:.2f} s / {floor:.2f} s = {one['wall_s'] / floor:.3f}", "≤ 1.03",
            one["wall_s"] / floor <= 1.03)
    r.check(f"  same, wall / {s.batch_jobs} × {s.job_seconds:g} s",
            f"{one['wall_s']:.2f} s / {ideal:.2f} s = {one['wall_s'] / ideal:.3f}", "(info)", None)
    r.check("  speed-up vs tutorial client",
            f"{tut['wall_s']:.2f} s / {one['wall_s']:.2f} s = {speedup:.2f}×", "≥ 3×",
            speedup >= 3)
    return r


def two_servers(tmp: Path, s: Settings) -> Result:
    """Scenario 2: the same batch over two servers; compared with scenario 1's one server."""
    r = Result("two_servers")
    one = s.cache.get("single") or daemon_batch(tmp, s, 1, s.batch_jobs, "single")
    two = daemon_batch(tmp, s, 2, s.batch_jobs, "two")
    gain = two["steady_throughput_jobs_per_s"] / one["steady_throughput_jobs_per_s"]
    gain_wall = two["throughput_jobs_per_s"] / one["throughput_jobs_per_s"]
    r.figures = {"one_server": one, "two_servers": two, "gain_steady": round(gain, 3),
                 "gain_wall": round(gain_wall, 3)}
    r.check("2 servers: throughput gain (first submit → last output)",
            f"{two['steady_throughput_jobs_per_s']:.2f} / "
            f"{one['steady_throughput_jobs_per_s']:.2f} jobs/s = {gain:.2f}×", "≥ 1.9×",
            gain >= 1.9)
    r.check("  same, drop → last output",
            f"{two['throughput_jobs_per_s']:.2f} / {one['throughput_jobs_per_s']:.2f} jobs/s"
            f" = {gain_wall:.2f}×", "(info)", None)
    return r


def fan_out(tmp: Path, s: Settings) -> Result:
    """Scenario 3: one daemon, 8 servers, jobs dropped at the servers' combined rate."""
    r = Result("fanout")
    n, jobs = s.fanout_servers, s.fanout_jobs
    rate = n / s.job_seconds
    stems = [job_name(i)[:-4] for i in range(jobs)]
    with sims(tmp / "fan-sims", n, s.job_seconds) as sim_list, \
            daemon(tmp / "fan-daemon", [x.url for x in sim_list], settle=s.settle) as d:
        inbox = d.dir("inbox")
        meter = CpuMeter(d.proc.pid, [x.proc.pid for x in sim_list])
        t0 = drop_paced(inbox, jobs, rate)
        _wait_outputs(d.dir("outbox"), stems, jobs * s.job_seconds + 120)
        cpu = meter.stop()
        cpu_run = cpu["daemon_cpu_s"]
        wall = _last_png(d.dir("outbox"), stems) - t0
        servers = []
        for sim in sim_list:
            busy = sim.stats()["busy_seconds"]
            times = [message_times(e) for e in sim.history().values()]
            start = min(t["execution_start"] for t in times)
            end = max(t["execution_success"] for t in times)
            servers.append({"url": sim.url, "prompts": len(times), "busy_s": round(busy, 3),
                            "span_s": round(end - start, 3),
                            "busy_of_span": round(busy / (end - start), 3),
                            "busy_of_wall": round(busy / wall, 3)})
        problems = d.problems()
    usage = d.usage
    cpu_total = usage.ru_utime + usage.ru_stime
    worst = min(x["busy_of_span"] for x in servers)
    worst_wall = min(x["busy_of_wall"] for x in servers)
    r.figures = {"servers": servers, "jobs": jobs, "offered_jobs_per_s": rate,
                 "wall_s": round(wall, 3), "daemon_cpu_run_s": round(cpu_run, 3),
                 "daemon_cpu_total_s": round(cpu_total, 3),
                 "cpu_ms_per_job_run": round(cpu_run / jobs * 1000, 2),
                 "cpu_ms_per_job_total": round(cpu_total / jobs * 1000, 2),
                 "sims_cpu_ms_per_job": round(cpu["sims_cpu_s"] / jobs * 1000, 2),
                 "cpu": cpu, "daemon_problems": problems}
    r.check(f"fan-out {n} servers, {jobs} jobs: least busy server (busy / own span)",
            f"{worst:.1%}", "≥ 90 %", worst >= 0.9)
    r.check("  same, busy / run wall time (drop → last output)", f"{worst_wall:.1%}",
            "(info)", None)
    r.check("  daemon CPU per job (during the run)", f"{cpu_run / jobs * 1000:.2f} ms",
            "< 10 ms", cpu_run / jobs < 0.010)
    r.check("  daemon CPU per job (whole process life)", f"{cpu_total / jobs * 1000:.2f} ms",
            "(info)", None)
    return r


def latency(tmp: Path, s: Settings) -> Result:
    """Scenario 4: spaced-out drops, so the numbers are the daemon's, not the queue's."""
    r = Result("latency")
    jobs = s.latency_jobs
    stems = [job_name(i)[:-4] for i in range(jobs)]
    dropped: dict[str, float] = {}
    with sims(tmp / "lat-sim", 1, s.job_seconds) as (sim,), \
            daemon(tmp / "lat-daemon", [sim.url], settle=s.settle) as d:
        outbox = d.dir("outbox")
        t0 = time.time()
        for i in range(jobs):
            delay = t0 + i * s.latency_spacing - time.time()
            if delay > 0:
                time.sleep(delay)
            dropped[job_name(i)] = drop(d.dir("inbox"), job_name(i), prompt_text(i))
        _wait_outputs(outbox, stems, jobs * s.job_seconds * 4 + 60)
        seen = {(e["event"], e.get("job") or e.get("file")): log_time(e)
                for e in d.events("job.detected", "job.claimed", "job.submitted")}
        claims = sorted(t for (event, _), t in seen.items() if event == "job.claimed")
        to_submit, to_file, to_sidecar, late = [], [], [], []
        steps: dict[str, list[float]] = {"drop_to_detected": [], "detected_to_claimed": [],
                                         "claimed_to_submitted": []}
        for stem in stems:
            car = read_json(outbox / f"{stem}.json")
            success = message_times(sim.history(car["prompt_id"])[car["prompt_id"]])
            name = f"{stem}.txt"
            marks = [dropped[name], *(seen[(event, name)] for event in
                                      ("job.detected", "job.claimed", "job.submitted"))]
            for key, (a, b) in zip(steps, itertools.pairwise(marks), strict=True):
                steps[key].append(b - a)
            to_submit.append(marks[-1] - marks[0])
            if marks[1] - marks[0] > 0.15:  # noticed late: how long after the claim before it?
                before = [t for t in claims if t < marks[0]]
                late.append(marks[1] - max(before) if before else float("nan"))
            to_file.append(appeared(outbox / f"{stem}_00001.png") - success["execution_success"])
            to_sidecar.append(iso_epoch(car["timings"]["delivered_at"])
                              - success["execution_success"])
        problems = d.problems()

    def summary(values: list[float]) -> dict[str, float]:
        return {"median_s": round(statistics.median(values), 4),
                "p95_s": round(percentile(values, 95), 4), "max_s": round(max(values), 4)}

    sub, out, car = summary(to_submit), summary(to_file), summary(to_sidecar)
    r.figures = {"jobs": jobs, "spacing_s": s.latency_spacing, "settle_s": s.settle,
                 "drop_to_submit": sub,
                 "drop_to_submit_steps_median_s": {k: round(statistics.median(v), 4)
                                                   for k, v in steps.items()},
                 "late_detections": len(late),
                 "late_detection_after_claim_before_drop_median_s":
                     round(statistics.median(late), 4) if late else None,
                 "completion_to_output_file": out,
                 "completion_to_sidecar_delivered_at": car, "daemon_problems": problems}
    limit = 0.2  # renamed in: claimed at once, no settle wait
    r.check("latency: drop (rename) → submit, median / p95",
            f"{sub['median_s']:.3f} / {sub['p95_s']:.3f} s", f"p95 ≤ {limit:.2f} s",
            sub["p95_s"] <= limit)
    r.check("  execution_success → output file, median / p95",
            f"{out['median_s']:.3f} / {out['p95_s']:.3f} s", "median < 0.1 s",
            out["median_s"] < 0.1)
    r.check("  execution_success → sidecar delivered_at, median / p95",
            f"{car['median_s']:.3f} / {car['p95_s']:.3f} s", "(info)", None)
    return r


def _claims(d: Daemon) -> dict[str, float]:
    return {e["job"]: log_time(e) for e in d.events("job.claimed")}


def _write_in_chunks(path: Path, chunks: int, size: int, pause: float) -> float:
    """One descriptor, `chunks` writes with `pause` between them; returns the close time."""
    with open(path, "wb") as fh:
        for i in range(chunks):
            if i:
                time.sleep(pause)
            fh.write(b"x" * size)
            fh.flush()
    return time.time()


def arrival(tmp: Path, s: Settings) -> Result:
    """Scenario 6: how soon a complete file is claimed (native observer, no settle wait) and
    that a file still being written never is: (a) renamed in, (b) a big file written by `cp`,
    (c) a writer pausing between chunks on one descriptor."""
    r = Result("arrival")
    big = tmp / "big.json"
    big.parent.mkdir(parents=True, exist_ok=True)
    with open(big, "wb") as fh:  # valid JSON padded with whitespace: the job itself runs
        fh.write(b'{"prompt": "a big job file"}' + b" " * (s.arrival_big_mib * 1024 * 1024))
    with sims(tmp / "arr-sim", 1, 0.01) as (sim,), \
            daemon(tmp / "arr-daemon", [sim.url], settle=s.settle,
                   limits={"max_job_bytes": (s.arrival_big_mib + 1) * 1024 * 1024}) as d:
        inbox = d.dir("inbox")
        closed: dict[str, float] = {}
        for i in range(s.arrival_renames):  # (a)
            name = f"renamed{i:03d}.txt"
            closed[name] = drop(inbox, name, prompt_text(i))
            time.sleep(s.latency_spacing)
        for i in range(s.arrival_copies):  # (b)
            name = f"copied{i:03d}.json"
            subprocess.run(["cp", str(big), str(inbox / name)], check=True)
            closed[name] = time.time()  # cp has closed the file when it exits
            time.sleep(s.latency_spacing)
        chunked = {f"chunked{i}.txt": inbox / f"chunked{i}.txt" for i in range(s.arrival_chunked)}
        threads = [threading.Thread(target=lambda n=n, p=p: closed.__setitem__(
            n, _write_in_chunks(p, 5, 1000, 2.0))) for n, p in chunked.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_until(lambda: set(closed) <= set(_claims(d)), 60, "every file claimed",
                   interval=0.1)
        claims = _claims(d)
        ready_by = {e["job"]: e.get("ready_by") for e in d.events("job.claimed")}
        problems = d.problems()
    lat = {kind: [claims[n] - closed[n] for n in closed if n.startswith(kind)]
           for kind in ("renamed", "copied", "chunked")}

    def summary(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "median_s": round(statistics.median(values), 4),
                "p95_s": round(percentile(values, 95), 4), "min_s": round(min(values), 4),
                "max_s": round(max(values), 4)}

    r.figures = {"settle_s": s.settle, "big_file_mib": s.arrival_big_mib,
                 "close_to_claim": {k: summary(v) for k, v in lat.items()},
                 "ready_by": sorted({f"{k}: {v}" for k, v in ready_by.items()
                                     if k in closed}),
                 "daemon_problems": problems}
    for kind, what in (("renamed", "(a) renamed in"), ("copied", f"(b) {s.arrival_big_mib} MB "
                                                                   "written by cp")):
        x = r.figures["close_to_claim"][kind]
        r.check(f"arrival {what}: close → claim, median / p95",
                f"{x['median_s'] * 1000:.1f} / {x['p95_s'] * 1000:.1f} ms",
                "< 50 / < 200 ms", x["median_s"] < 0.05 and x["p95_s"] < 0.2)
    x = r.figures["close_to_claim"]["chunked"]
    r.check("arrival (c) 5 chunks, 2 s pauses: close → claim, earliest / median",
            f"{x['min_s'] * 1000:.1f} / {x['median_s'] * 1000:.1f} ms",
            "never before the close", x["min_s"] >= 0)
    return r


def scale(tmp: Path, s: Settings) -> Result:
    """Scenario 5: a full inbox at start, a fast server, then a long idle with polling on."""
    r = Result("scale")
    jobs = s.scale_jobs
    base = tmp / "scale-daemon"
    with sims(tmp / "scale-sim", 1, s.scale_job_seconds) as (sim,):
        d = Daemon(base, [sim.url], settle=s.settle, watch="poll")
        try:
            inbox = d.dir("inbox")
            inbox.mkdir(parents=True)
            for i in range(jobs):
                (inbox / job_name(i)).write_text(prompt_text(i))
            t0 = time.time()
            d.start()
            ready = time.time() - t0
            done = d.dir("done")
            wait_until(lambda: len(os.listdir(done)) + len(os.listdir(d.dir("failed"))) >= jobs,
                       jobs * 0.5 + 120, f"{jobs} jobs to finish", interval=0.5)
            wall = time.time() - t0
            cpu_work = d.cpu()
            time.sleep(1)  # let the last log lines and state files go
            idle0 = d.cpu()
            windows = []  # 10 s slices: a steady cost and a one-off burst look different
            for _ in range(max(1, round(s.idle_seconds / 10))):
                before = d.cpu()
                time.sleep(s.idle_seconds / max(1, round(s.idle_seconds / 10)))
                windows.append(round(d.cpu() - before, 2))
            idle = (d.cpu() - idle0) / s.idle_seconds
            outbox_files = len(os.listdir(d.dir("outbox")))
            finished = len(os.listdir(done))
        finally:
            usage = d.stop()
        executed = sim.stats()["prompts_executed"]
    cpu_total = usage.ru_utime + usage.ru_stime
    r.figures = {"jobs": jobs, "done": finished, "outbox_files": outbox_files,
                 "sim_prompts_executed": executed, "startup_to_ready_s": round(ready, 2),
                 "wall_s": round(wall, 2), "jobs_per_s": round(jobs / wall, 1),
                 "cpu_s_until_done": round(cpu_work, 2), "cpu_s_total": round(cpu_total, 2),
                 "cpu_ms_per_job": round(cpu_work / jobs * 1000, 2),
                 "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                 "idle_seconds": s.idle_seconds, "idle_cpu_fraction": round(idle, 4),
                 "idle_cpu_s_per_window": windows,
                 "daemon_problems": d.problems()}
    r.check(f"scale: {jobs} .txt jobs at start, all done",
            f"{finished} done, {outbox_files} outbox files, {wall:.0f} s", f"{jobs} done",
            finished == jobs)
    r.check("  daemon CPU per job / peak RSS",
            f"{cpu_work / jobs * 1000:.2f} ms / {usage.ru_maxrss / 1024:.0f} MiB", "(info)", None)
    r.check(f"  idle CPU over {s.idle_seconds:g} s (poll observer)", f"{idle:.2%} of a core",
            "< 2 %", idle < 0.02)
    return r


SCENARIOS = {"single": single_server, "two_servers": two_servers, "fanout": fan_out,
             "latency": latency, "arrival": arrival, "scale": scale}
