"""Points where a test may have the daemon die (SIGKILL: no cleanup, no `finally`), as a
crash at that very moment would: `HOTFOLDER_TEST_KILL=POINT:NAME`, NAME being the file the
daemon is handling. Only tests set it; unset, each point costs one comparison.

    start      a job (by its name in the inbox or in processing/) begins a life of the daemon
    placed     a file's copy on another file system has its name, the original is not removed
    queued     a job's webhook events are on disk; the job file has not left processing/
    converted  an output (by its outbox name) is converted in its temp file, not yet named
    delivered  an output has its outbox name, the job's record does not say so yet
"""

from __future__ import annotations

import os
import signal

_KILL = os.environ.get("HOTFOLDER_TEST_KILL", "")


def reached(point: str, *names: str) -> None:
    if _KILL and any(f"{point}:{name}" == _KILL for name in names if name):
        os.kill(os.getpid(), signal.SIGKILL)
