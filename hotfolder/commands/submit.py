"""`hotfolder submit FILE...`: run job files once, in the foreground, without the daemon, and
say what became of each (they end in done/ or failed/ like any job)."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from hotfolder.comfy.pool import ServerPool
from hotfolder.config.model import Config, FolderConfig
from hotfolder.daemon import ensure_folders
from hotfolder.errors import ConfigError
from hotfolder.fsutil import candidates
from hotfolder.job.pipeline import Pipeline
from hotfolder.job.state import JobState, Outcome


def run_submit(config: Config, files: list[Path], *, folder_name: str | None, out: TextIO,
               err: TextIO) -> int:
    """Run each file as a job of the folder (the first one by default); print what became of
    each."""
    folder = next((f for f in config.folders if f.name == folder_name), None) \
        if folder_name else config.folders[0]
    if folder is None:
        raise ConfigError([f"--folder: no hot folder named {folder_name!r}"])
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print("hotfolder: no such file: " + ", ".join(missing), file=err)
        return 2
    ensure_folders(config)
    stop = threading.Event()
    pool = ServerPool(config.servers, config.comfy, stop)
    pool.start()
    pipeline = Pipeline(config, pool, stop)
    states = []
    for source in files:
        name = next(n for n in candidates(source.name) if not (folder.processing / n).exists())
        shutil.copy2(source, folder.processing / name)
        state = JobState(name=name, folder=folder.name, source=source.name)
        state.save(folder)
        states.append(state)
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(states))) as executor:
            outcomes = list(executor.map(lambda s: _run_to_end(pipeline, folder, s), states))
    except KeyboardInterrupt:
        stop.set()
        return 130
    finally:
        stop.set()
        pool.close()
    for source, outcome in zip(files, outcomes, strict=True):
        if outcome.status == "done":
            print(f"{source}: done -> " + ", ".join(str(p) for p in outcome.outputs), file=out)
        else:
            print(f"{source}: {outcome.status}: {outcome.error or ''}", file=out)
    return 0 if all(o.status == "done" for o in outcomes) else 1


def _run_to_end(pipeline: Pipeline, folder: FolderConfig, state: JobState) -> Outcome:
    """One job through the pipeline, waiting out its parked spells (a server's trouble)."""
    while True:
        outcome = pipeline.run(folder, state)
        if outcome.status != "parked" or pipeline.stop.wait(outcome.retry_in):
            return outcome
