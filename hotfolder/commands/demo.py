"""`hotfolder demo`: the whole product in one command, with no GPU and no ComfyUI needed.

Starts the simulator and the daemon on a fresh hot folder, drops a few sample jobs (one of
them deliberately wrong), waits for them, and shows where everything went.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from hotfolder.commands.init import init_dir
from hotfolder.config.load import load_config
from hotfolder.daemon.loop import Daemon
from hotfolder.invocation import command
from hotfolder.logs import configure_logging

SAMPLES = {
    "fox.txt": "a photorealistic red fox in snow, golden hour lighting\n",
    "lighthouse.json": json.dumps({"prompt": "a lighthouse on a cliff at dusk, oil painting",
                                   "seed": 42, "steps": 20, "width": 768, "height": 512},
                                  indent=2),
    "robot.yaml": "prompt: a friendly robot watering plants, watercolor\n"
                  "negative: dark, gloomy\nseed: random\nset:\n  KSampler.cfg: 5.5\n",
    "typo.json": json.dumps({"prompt": "this one fails on purpose", "stepz": 20}),
}
EXPECTED = {"fox.txt": "done", "lighthouse.json": "done", "robot.yaml": "done",
            "typo.json": "failed"}


def run_demo(timeout: float = 60.0) -> int:
    from hotfolder.sim import SimServer

    out = sys.stdout
    sim = SimServer(host="127.0.0.1", port=0, job_seconds=0.5)
    sim.start()
    base = Path(tempfile.mkdtemp(prefix="hotfolder-demo-"))
    config_path = init_dir(base)
    text = config_path.read_text(encoding="utf-8")
    text = text.replace("http://127.0.0.1:8188", sim.url).replace("settle_seconds: 1.0",
                                                                  "settle_seconds: 0.3")
    config_path.write_text(text, encoding="utf-8")
    config = load_config(config_path)
    configure_logging("info", "console" if out.isatty() else "auto")
    out.write(f"hotfolder demo: simulator at {sim.url}, hot folder at {base / 'hot'}\n")
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    folder = config.folders[0]
    for name, body in SAMPLES.items():
        (folder.inbox / name).write_text(body, encoding="utf-8")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _all_finished(folder.done, folder.failed):
        time.sleep(0.2)
    daemon.request_stop()
    thread.join(timeout=15)
    sim.stop()
    return _report(out, base, folder.done, folder.failed, folder.outbox)


def _all_finished(done: Path, failed: Path) -> bool:
    return all((done / n).exists() or (failed / n).exists() for n in SAMPLES)


def _report(out, base: Path, done: Path, failed: Path, outbox: Path) -> int:
    ok = True
    out.write("\nResults:\n")
    for name, expected in EXPECTED.items():
        stem = Path(name).stem
        if (done / name).exists():
            files = sorted(p.name for p in outbox.glob(f"{stem}_*"))
            out.write(f"  {name:16} done    -> outbox/{', outbox/'.join(files)} "
                      f"(+ outbox/{stem}.json)\n")
            ok &= expected == "done"
        elif (failed / name).exists():
            reason = json.loads((failed / f"{stem}.error.json").read_text())["error"]
            out.write(f"  {name:16} failed  -> failed/{stem}.error.json: {reason}\n")
            ok &= expected == "failed"
        else:
            out.write(f"  {name:16} did not finish in time\n")
            ok = False
    out.write(f"\nEverything is in {base}: drop your own files into {base / 'hot' / 'inbox'} "
              f"after starting\n  {command('run', '--config', base / 'hotfolder.yaml')}\n"
              "(point `servers:` in that file at your ComfyUI first).\n")
    return 0 if ok else 1
