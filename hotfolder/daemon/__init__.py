"""The long-running process: its loop, its workers, reloads, signals and the live status it
publishes for `hotfolder status` and the status page."""

from hotfolder.daemon.loop import Daemon, ensure_folders

__all__ = ["Daemon", "ensure_folders"]
