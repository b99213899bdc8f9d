"""hotfolder's benchmark against the bundled ComfyUI simulator, on this machine.

    python benchmarks/bench.py                 # everything (several minutes)
    python benchmarks/bench.py --quick         # smaller loads, under a minute
    python benchmarks/bench.py --only latency  # one scenario (repeatable)
    python benchmarks/bench.py --json out.json # also write every figure as JSON

Scenarios: `single` (40 jobs at once, one server, vs the tutorial client), `two_servers`,
`fanout` (8 servers), `latency`, `arrival` (drop → claim: renamed, copied, written in
chunks), `scale` (10,000 jobs, then idle CPU), `affinity` (two checkpoints, FIFO vs the
model-aware schedule), `priority` (a rush job behind 30), `fleet` (32 servers, 2,000 jobs of
2 s; `--fleet-servers`, `--fleet-jobs`). Only 127.0.0.1 is used;
everything runs in a temporary directory that is removed afterwards (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import SCENARIOS as BASIC
from scenarios import Result, Settings
from scenarios_sched import SCHED_SCENARIOS

SCENARIOS = {**BASIC, **SCHED_SCENARIOS}


def settings(args: argparse.Namespace) -> Settings:
    """Quick mode shrinks every load so the whole run stays under a minute."""
    s = Settings(quick=args.quick, settle=args.settle)
    if args.quick:
        s.batch_jobs, s.fanout_jobs, s.latency_jobs = 5, 64, 6
        s.scale_jobs, s.idle_seconds = 1000, 10.0
        s.arrival_renames, s.arrival_copies, s.arrival_big_mib, s.arrival_chunked = 6, 2, 5, 2
        s.affinity_jobs, s.model_load_seconds, s.priority_waiting = 8, 0.5, 6
        s.fleet_servers, s.fleet_jobs, s.fleet_job_seconds = 8, 64, 0.5
    s.fleet_servers = args.fleet_servers or s.fleet_servers
    s.fleet_jobs = args.fleet_jobs or s.fleet_jobs
    return s


def hotfolder_under_test(cwd: Path) -> str:
    """Which hotfolder the child processes import (PYTHONPATH may point at another checkout)."""
    code = "import hotfolder; print(hotfolder.__version__, hotfolder.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def calibration_ms() -> float:
    """CPU time of a fixed pure-Python workload: compares this machine's speed between runs."""
    sample = {"a": list(range(50)), "b": {"x": "y" * 20}}
    start = time.thread_time()
    for _ in range(20000):
        json.dumps(sample)
    return round((time.thread_time() - start) * 1000, 1)


def print_figures(result: Result) -> None:
    print(f"\n== {result.name} ==")
    print(json.dumps(result.figures, indent=2, ensure_ascii=False))


def table(results: list[Result]) -> str:
    rows = [("scenario", "measured", "target", "result")]
    for result in results:
        for c in result.checks:
            verdict = "info" if c["ok"] is None else ("PASS" if c["ok"] else "FAIL")
            rows.append((c["what"], c["measured"], c["target"], verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke variant (< 60 s)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (may be repeated)")
    parser.add_argument("--json", type=Path, help="write all figures and checks here")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="the folders' settle_seconds (default 1.0, the shipped default)")
    parser.add_argument("--fleet-servers", type=int, metavar="N",
                        help="simulated servers in `fleet` (default 32; 8 with --quick)")
    parser.add_argument("--fleet-jobs", type=int, metavar="N",
                        help="jobs in `fleet` (default 2000; 64 with --quick)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, hot folders) for inspection")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every finally block stops its daemon and simulators
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    s = settings(args)
    names = [n for n in SCENARIOS if not args.only or n in args.only]
    tmp = Path(tempfile.mkdtemp(prefix="hotfolder-bench-"))
    results: list[Result] = []
    started = time.monotonic()
    measured, calibration = hotfolder_under_test(tmp), calibration_ms()
    print(f"hotfolder benchmark ({'quick' if args.quick else 'full'}): {', '.join(names)}; "
          f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"calibration {calibration} ms CPU, settle {s.settle:g} s\n"
          f"measuring {measured}; work dir {tmp}", flush=True)
    try:
        for name in names:
            # files deleted shortly before (a previous run's work dir) are written back first:
            # until then, ext4 without a journal has each new file's inode search step over
            # them, which would be charged to the daemon of whichever scenario runs next
            os.sync()
            t = time.monotonic()
            try:
                result = SCENARIOS[name](tmp / name, s)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the rest
                traceback.print_exc()
                result = Result(name, {"error": f"{type(exc).__name__}: {exc}"})
                result.check(f"{name}: ran", f"error: {type(exc).__name__}", "no error", False)
            result.figures["scenario_seconds"] = round(time.monotonic() - t, 1)
            results.append(result)
            print_figures(result)
            sys.stdout.flush()
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{table(results)}\n\ntotal {time.monotonic() - started:.0f} s")
    if args.quick:
        print("quick mode: loads are too small for the targets to mean much (start-up "
              "dominates); judge the targets on a full run")
    if args.json:
        payload: dict[str, Any] = {
            "quick": args.quick, "settle_seconds": s.settle, "python": platform.python_version(),
            "hotfolder": measured, "cores": os.cpu_count(), "calibration_ms": calibration,
            "results": [{"name": r.name, "figures": r.figures, "checks": r.checks}
                        for r in results]}
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(c["ok"] is not False for r in results for c in r.checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
