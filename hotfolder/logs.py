"""Logging setup, called once by the CLI: structlog for our events, stdlib routed through it.

Human-readable lines on a terminal, JSON lines otherwise (journald, files, CI); urllib3,
watchdog and websocket-client log through the same processors so everything has one format.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog

from hotfolder.credentials import redact

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _redact_secrets(_logger: Any, _method: str, event: Any) -> Any:
    """No token or password reaches a log line, whoever logged it (urllib3 included)."""
    return redact(event)


def _redact_rendered(_logger: Any, _method: str, line: Any) -> Any:
    """Mask secrets once more in the finished line: a rendered traceback (exception text,
    frames) is made after the event's own fields were masked."""
    return redact(line)


class _BoundLogger(structlog.stdlib.BoundLogger):
    """A debug event the level filters out is dropped before the processors run (context,
    timestamp, secret masking): the stdlib logger would only drop it after them, and a job
    makes several."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return super().debug(event, *args, **kw)


def configure_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
        _redact_secrets,
    ]
    # tracebacks without the frames' local variables: a local may hold a job file's content,
    # whose repr alone can be huge (an alias bomb) or carry what the file should not reveal
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=stream.isatty(),
                                                   exception_formatter=structlog.dev.plain_traceback)
                     if fmt == "console" else structlog.processors.JSONRenderer())
    tracebacks = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([] if fmt == "console" else [tracebacks]),
                    renderer, _redact_rendered],
    )
    # What the stdlib would gather for every record and no processor here reads: the
    # caller's frame, thread, process and multiprocessing names (the logging HOWTO's
    # "Optimization" section names these switches). A daemon logs several lines per job.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # chatty third parties stay at warning unless we are debugging
    for name in ("urllib3", "watchdog", "websocket"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)

    def log_thread_death(args: threading.ExceptHookArgs) -> None:
        structlog.get_logger().error(
            "thread.died", thread=getattr(args.thread, "name", "?"),
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = log_thread_death
