"""Processes and measurements shared by the benchmark scenarios.

Simulators and the daemon run as child processes: each simulator gets its own interpreter (and
GIL), so eight of them do not slow each other or the benchmark down, and the daemon's CPU time
and peak memory can be read from the kernel (`/proc/<pid>/stat`, `wait4` rusage) without
counting anything else. Every process started here is stopped in `finally` blocks by its pid:
SIGTERM first, SIGKILL if it does not go within the grace period.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config" / "workflows" / "sdxl_txt2img.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.02) -> Any:
    """Poll `predicate` until truthy; a benchmark that hangs must say what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def http_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - 127.0.0.1 only
        return json.load(answer)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20.0) -> Any:
    """SIGTERM, then SIGKILL after `grace`; reap with wait4 and return its rusage.

    Reaping ourselves (instead of Popen.wait) is what gives the child's own CPU time and
    ru_maxrss; Popen is then told the exit code so it never waits a second time.
    """
    if proc.returncode is not None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU of a live process so far (clock ticks from /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat): shows how loaded the box was."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuMeter:
    """CPU used during a stretch of a run: by the daemon, the simulators and the whole machine.

    What the machine used beyond these (and the benchmark itself) came from other processes,
    such as another engineer's test run: the figure to look at when a result seems noisy.
    """

    def __init__(self, daemon_pid: int, sim_pids: list[int]) -> None:
        self.pids = (daemon_pid, sim_pids)
        self.start = self._read()
        self.t0 = time.monotonic()

    def _read(self) -> tuple[float, float, float, float]:
        daemon_pid, sim_pids = self.pids
        bench = sum(os.times()[:2])
        return (proc_cpu_seconds(daemon_pid), sum(proc_cpu_seconds(p) for p in sim_pids),
                machine_busy_seconds(), bench)

    def stop(self) -> dict[str, float]:
        end = self._read()
        wall = time.monotonic() - self.t0
        daemon, sims_, machine, bench = (b - a for a, b in zip(self.start, end, strict=True))
        return {"wall_s": round(wall, 3), "daemon_cpu_s": round(daemon, 3),
                "sims_cpu_s": round(sims_, 3), "bench_cpu_s": round(bench, 3),
                "machine_busy_cores": round(machine / wall, 2),
                "other_processes_cores": round(max(0.0, machine - daemon - sims_ - bench) / wall,
                                               2),
                "cores": os.cpu_count() or 0}


class Sim:
    """`hotfolder sim` in its own process on a free port of 127.0.0.1."""

    def __init__(self, workdir: Path, job_seconds: float, model_load_seconds: float = 0.0) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port_file = workdir / "port"
        self.url = ""
        self.log = open(workdir / "sim.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hotfolder", "sim", "--host", "127.0.0.1", "--port", "0",
             "--port-file", str(self.port_file), "--job-seconds", str(job_seconds),
             # only when asked for: an older simulator (PYTHONPATH) still runs the rest
             *(["--model-load-seconds", str(model_load_seconds)] if model_load_seconds else [])],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)

    def wait_listening(self) -> None:
        """Separate from __init__ so several simulators start in parallel."""
        wait_until(lambda: self.port_file.exists() or self.proc.poll() is not None, 30,
                   "the simulator to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"simulator exited: {(self.workdir / 'sim.log').read_text()}")
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}"

    def stats(self) -> dict[str, Any]:
        return http_json(f"{self.url}/sim/stats")

    def runs(self) -> dict[str, Any]:
        """Every prompt run in order: model set, whether it loaded, start and end (epoch s)."""
        return http_json(f"{self.url}/sim/runs", 60)

    def history(self, prompt_id: str | None = None) -> dict[str, Any]:
        """One entry, or (benchmark only: the daemon never does this) the whole history."""
        return http_json(f"{self.url}/history" + (f"/{prompt_id}" if prompt_id else ""), 60)

    def stop(self) -> None:
        stop_process(self.proc, grace=5)
        self.log.close()


@contextlib.contextmanager
def sims(workdir: Path, count: int, job_seconds: float,
         model_load_seconds: float = 0.0) -> Iterator[list[Sim]]:
    started: list[Sim] = []
    try:
        for i in range(count):
            started.append(Sim(workdir / f"sim{i}", job_seconds, model_load_seconds))
        for sim in started:
            sim.wait_listening()
        yield started
    finally:
        for sim in started:
            sim.stop()


def message_times(entry: dict[str, Any]) -> dict[str, float]:
    """`execution_start` / `execution_success` of a history entry, as epoch seconds."""
    out = {}
    for event, data in entry.get("status", {}).get("messages", []):
        if isinstance(data, dict) and "timestamp" in data:
            out[event] = data["timestamp"] / 1000.0
    return out


class Daemon:
    """`python -m hotfolder run` on a temp hot folder, its JSON log in a file."""

    def __init__(self, base: Path, urls: list[str], *, settle: float, watch: str = "native",
                 limits: dict[str, int] | None = None, folders: list[dict[str, Any]] | None = None,
                 workflows: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
                 **comfy: Any) -> None:
        """`folders`, `workflows` and `extra` (more top-level keys) replace the one `bench`
        folder's defaults: scenarios add only the keys they need, so a daemon that does not know
        a key refuses only the scenarios that use it."""
        self.base = base
        self.root = base / "hot"
        self.log_path = base / "daemon.log"
        self.config = {
            "servers": list(urls),
            "comfy": {"max_in_flight": 2, "poll_interval": 1.0, **comfy},
            "workflows": workflows or {"sdxl": str(TEMPLATE)},
            "folders": folders or [
                {"name": "bench", "root": str(self.root), "workflow": "sdxl",
                 "settle_seconds": settle, "watch": watch, "limits": limits or {},
                 "defaults": {"negative": "blurry, low quality", "seed": "random"}}],
            "log": {"level": "info", "format": "json"},
            **(extra or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.usage: Any = None

    def dir(self, name: str) -> Path:
        return self.root / name

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        for name in ("inbox", "outbox", "done"):
            self.dir(name).mkdir(parents=True, exist_ok=True)
        path = self.base / "hotfolder.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("HOTFOLDER_CONFIG", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hotfolder", "run", "--config", str(path)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.base)
        wait_until(lambda: "daemon.ready" in self.log_text() or self.proc.poll() is not None,
                   120, "the daemon to start", interval=0.05)
        if self.proc.poll() is not None:
            raise RuntimeError("daemon exited at start:\n" + self.log_text()[-3000:])

    def cpu(self) -> float:
        assert self.proc is not None
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> Any:
        """SIGTERM (SIGKILL after 20 s); keeps and returns the daemon's rusage."""
        if self.proc is not None and self.usage is None:
            self.usage = stop_process(self.proc)
        return self.usage

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, *names: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and (not names or event.get("event") in names):
                    out.append(event)
        return out

    def problems(self) -> dict[str, int]:
        """Warning/error events by name: anything here is worth a look before trusting a run."""
        counts: dict[str, int] = {}
        for event in self.events():
            if event.get("level") in ("warning", "error", "critical"):
                counts[event.get("event", "?")] = counts.get(event.get("event", "?"), 0) + 1
        return counts


@contextlib.contextmanager
def daemon(base: Path, urls: list[str], **kwargs: Any) -> Iterator[Daemon]:
    d = Daemon(base, urls, **kwargs)
    try:
        d.start()
        yield d
    finally:
        d.stop()


def log_time(event: dict[str, Any]) -> float:
    """structlog's `timestamp` is local time without an offset: read it as local time."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def iso_epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def drop(inbox: Path, name: str, text: str) -> float:
    """Write a job like a careful copier (hidden temp name, then rename); returns the drop time."""
    tmp = inbox / f".{name}.part"
    tmp.write_text(text)
    tmp.rename(inbox / name)
    return time.time()


def drop_paced(inbox: Path, jobs: int, rate: float) -> float:
    """Drop `jobs` prompt files at `rate` per second, as a steady stream of arrivals would;
    returns when the first was due."""
    t0 = time.time()
    for i in range(jobs):
        delay = t0 + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        drop(inbox, job_name(i), prompt_text(i))
    return t0


def prompt_text(i: int) -> str:
    return f"benchmark job {i}: a photorealistic red fox in snow, golden hour lighting"


def job_name(i: int) -> str:
    return f"job{i:05d}.txt"


def appeared(path: Path) -> float:
    """When a file got its final name: link()/rename() update the inode's ctime."""
    return path.stat().st_ctime


def outputs_done(outbox: Path, stems: Iterable[str]) -> bool:
    return all((outbox / f"{stem}_00001.png").exists() and (outbox / f"{stem}.json").exists()
               for stem in stems)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): no interpolation between samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
