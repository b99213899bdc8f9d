"""End-to-end fixtures: the simulator on a free port, the real daemon as a child process.

Tests talk to the daemon only through folders, like a user does, and assert on the files.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from harness import HotFolder, make_config
from simtools import close_open

from hotfolder.sim import Faults, SimServer


@pytest.fixture
def sim() -> Iterator[SimServer]:
    server = SimServer(host="127.0.0.1", port=0, job_seconds=0.05, faults=Faults())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hot(tmp_path: Path, sim: SimServer) -> Iterator[HotFolder]:
    folder = HotFolder(base=tmp_path, server_url=sim.url,
                       config=make_config(tmp_path, sim.url))
    yield folder
    folder.stop()


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    """Simulators started on demand (free ports), all stopped after the test, with every
    client the test opened through `simtools.OPEN`."""
    sims: list[SimServer] = []

    def factory(**kwargs: Any) -> SimServer:
        kwargs.setdefault("job_seconds", 0.05)
        kwargs.setdefault("output_dir", tmp_path / "output")
        sim = SimServer(port=0, **kwargs).start()
        sims.append(sim)
        return sim

    yield factory
    close_open()
    for sim in sims:
        sim.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium (skipped, saying why, where Debian's chromium is not installed)."""
    from browser import start_browser

    yield from start_browser(tmp_path / "chromium-profile")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures logging for the whole process; put it back for the tests after."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, threading.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    threading.excepthook = hook
    structlog.reset_defaults()
